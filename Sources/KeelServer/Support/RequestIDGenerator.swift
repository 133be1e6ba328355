import KeelCore
import Synchronization

/// Request ids unique across instances without a syscall per request: a
/// random per-process prefix and a counter.
final class RequestIDGenerator: Sendable {
    private let prefix = Identifiers.random(byteCount: 6)
    private let counter = Atomic<UInt64>(0)

    func next() -> String {
        let value = self.counter.wrappingAdd(1, ordering: .relaxed).newValue
        return self.prefix + "-" + String(value, radix: 36)
    }
}
