import Foundation
import KeelCore
import Synchronization
import Testing

@testable import KeelServer

/// An event log in memory whose next read can be held back, to order races by hand.
private final class ScriptedLog: EventLog {
    private struct State {
        var events: [JobEvent] = []
        var holdNext = false
        var held: [CheckedContinuation<Void, Never>] = []
        var reads = 0
    }

    private let state = Mutex(State())

    func append(_ sequence: Int64) {
        self.state.withLock {
            $0.events.append(JobEvent(jobID: "job", sequence: sequence, type: "token", dataJSON: "{}", createdAt: Date()))
        }
    }

    func holdNextRead() { self.state.withLock { $0.holdNext = true } }

    func releaseHeld() {
        let held = self.state.withLock { state in
            defer { state.held = [] }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }

    var heldReads: Int { self.state.withLock { $0.held.count } }
    var reads: Int { self.state.withLock { $0.reads } }

    func events(jobID: String, after: Int64, limit: Int) async throws -> [JobEvent] {
        let hold = self.state.withLock { state in
            state.reads += 1
            defer { state.holdNext = false }
            return state.holdNext
        }
        if hold {
            await withCheckedContinuation { continuation in self.state.withLock { $0.held.append(continuation) } }
        }
        return self.state.withLock { state in Array(state.events.filter { $0.sequence > after }.prefix(limit)) }
    }
}

@Suite("Shared stream reads")
struct ChangeHubTests {
    @Test("a ready job wakes one idle worker that claims its type; a claim wakes the next idle worker of the same lane only")
    func typedWakeUps() async {
        let hub = ChangeHub()
        let generalTypes: Set = ["document.ingest", "upload.digest"]
        let modelTypes: Set = ["chat.reply"]
        let (first, second, lane) = (WakeSignal(), WakeSignal(), WakeSignal())
        for signal in [first, second, lane] { hub.addWorker(signal) }
        hub.markIdle(lane, types: modelTypes)
        hub.markIdle(first, types: generalTypes)
        hub.markIdle(second, types: generalTypes)
        /// Which of the three were woken since the last look (in order: first, second, lane).
        func woken() async -> [Bool] {
            [await first.wait(timeout: .zero), await second.wait(timeout: .zero), await lane.wait(timeout: .zero)]
        }

        // A reply wakes the model lane, not the longer-idle general workers.
        hub.publish([.jobReady(type: "chat.reply")])
        #expect(await woken() == [false, false, true])
        // The lane is out of the idle list now; a type nobody here claims wakes nobody.
        hub.publish([.jobReady(type: "chat.reply"), .jobReady(type: "elsewhere.only")])
        #expect(await woken() == [false, false, false])
        // An ingestion wakes the longest-idle general worker, one per job.
        hub.publish([.jobReady(type: "document.ingest")])
        #expect(await woken() == [true, false, false])
        // The lane idles again; the first worker's claim wakes the second worker, not the lane.
        hub.markIdle(lane, types: modelTypes)
        hub.markBusy(first, types: generalTypes)
        #expect(await woken() == [false, true, false])
        // A resync wakes everyone.
        hub.publish([.resync])
        #expect(await woken() == [true, true, true])
    }

    @Test("several followers share one read per change")
    func sharing() async throws {
        let hub = ChangeHub()
        let log = ScriptedLog()
        let signals = (0..<5).map { _ in WakeSignal() }
        for signal in signals { hub.follow(jobID: "job", signal) }
        log.append(1)
        log.append(2)
        for _ in 0..<5 { #expect(try await hub.events(jobID: "job", after: 0, limit: 100, log: log).map(\.sequence) == [1, 2]) }
        #expect(log.reads == 1)
        // Nothing new since the last read: no read at all.
        #expect(try await hub.events(jobID: "job", after: 2, limit: 100, log: log).isEmpty)
        #expect(log.reads == 1)
        log.append(3)
        hub.publish([.jobEvents(jobID: "job")])
        for _ in 0..<5 { #expect(try await hub.events(jobID: "job", after: 2, limit: 100, log: log).map(\.sequence) == [3]) }
        #expect(log.reads == 2)
    }

    @Test("a read started before a tail was dropped and made again does not hide later events")
    func staleReadAfterChurn() async throws {
        let hub = ChangeHub()
        let log = ScriptedLog()
        let (a, b, c) = (WakeSignal(), WakeSignal(), WakeSignal())
        hub.follow(jobID: "job", a)
        hub.follow(jobID: "job", b)
        for sequence in 1...3 { log.append(Int64(sequence)) }
        #expect(try await hub.events(jobID: "job", after: 0, limit: 100, log: log).count == 3)
        for _ in 0..<50 { hub.publish([.jobEvents(jobID: "job")]) }

        // A starts a shared read that stalls…
        log.holdNextRead()
        let stalled = Task { try await hub.events(jobID: "job", after: 3, limit: 100, log: log) }
        while log.heldReads == 0 { try await Task.sleep(for: .milliseconds(1)) }
        // …while B leaves (the tail is dropped) and C arrives (a new tail).
        hub.unfollow(jobID: "job", b)
        hub.follow(jobID: "job", c)
        log.append(4)
        hub.publish([.jobEvents(jobID: "job")])
        #expect(try await hub.events(jobID: "job", after: 3, limit: 100, log: log).map(\.sequence) == [4])
        log.releaseHeld()
        #expect(try await stalled.value.map(\.sequence) == [4])

        // The next event must reach C, whatever the stale read recorded.
        log.append(5)
        hub.publish([.jobEvents(jobID: "job")])
        #expect(try await hub.events(jobID: "job", after: 4, limit: 100, log: log).map(\.sequence) == [5])
    }
}
