/// CRC-32 as zlib, PNG and Ethernet compute it (IEEE 802.3, reflected
/// polynomial 0xEDB88320), which is the checksum of AWS event-stream frames.
///
/// Hand-written and table-driven on purpose: no zlib binding here, so the
/// target builds the same everywhere and the frames' checksums are testable
/// against Python's `zlib.crc32`.
public struct CRC32: Sendable, Equatable {
    /// The checksum of everything fed so far.
    public private(set) var value: UInt32 = 0

    public init() {}

    /// Continues a checksum, as `zlib.crc32(data, value)` does.
    public init(continuing value: UInt32) {
        self.value = value
    }

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        var crc = ~self.value
        let table = Self.table
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        self.value = ~crc
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }

    private static let table: [UInt32] = (0..<256).map { index in
        var entry = UInt32(index)
        for _ in 0..<8 {
            entry = entry & 1 == 1 ? 0xEDB8_8320 ^ (entry >> 1) : entry >> 1
        }
        return entry
    }
}
