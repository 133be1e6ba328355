/// Checks a ZIP archive's structure before ZIPFoundation reads it.
///
/// ZIPFoundation trusts the offsets and sizes in the archive: values of
/// 2^63 or more (easy with ZIP64 fields) trap when it converts them to
/// `off_t` or `Int64`, or overflow when it adds them, and that kills the
/// process. This walks the same records it will (the end-of-central-
/// directory record, the ZIP64 locator and record when present, every
/// central-directory header with its ZIP64 extra field, every local header
/// and, for entries with one, the data descriptor), reading the values the
/// way ZIPFoundation does, and refuses any offset, size or end that is not
/// inside the bytes. All arithmetic is checked.
enum ZipPreflight {
    static let maxEntries = 10_000

    static func check(_ bytes: [UInt8], deadline: Deadline) throws(DocumentExtractionError) {
        let reader = Reader(bytes: bytes)
        let total = UInt64(bytes.count)

        // The end-of-central-directory record: the last signature, scanning back (as ZIPFoundation does).
        guard bytes.count >= 22 else { throw .malformed(.docx, "it is not a zip archive") }
        var eocd: UInt64?
        var position = UInt64(bytes.count - 22)
        let lowest = position > 0xFFFF ? position - 0xFFFF : 0
        while true {
            if try reader.u32(position) == 0x0605_4B50 { eocd = position; break }
            if position == lowest { break }
            position -= 1
        }
        guard let eocd else { throw .malformed(.docx, "it is not a zip archive") }
        var entries = UInt64(try reader.u16(eocd + 10))
        var directorySize = UInt64(try reader.u32(eocd + 12))
        var directoryOffset = UInt64(try reader.u32(eocd + 16))

        // ZIP64: ZIPFoundation reads the locator just before the record and
        // the ZIP64 record just before that, and then uses the record's values.
        if eocd > 20, eocd - 20 > 56 {
            let locator = eocd - 20, record = locator - 56
            if try reader.u32(locator) == 0x0706_4B50, try reader.u32(record) == 0x0606_4B50 {
                let recordOffset = try reader.u64(locator + 8)
                guard recordOffset < total else { throw Self.damaged }
                if try reader.u16(record + 14) >= 45 {
                    entries = try reader.u64(record + 32)
                    directorySize = try reader.u64(record + 40)
                    directoryOffset = try reader.u64(record + 48)
                }
            }
        }
        guard entries <= UInt64(Self.maxEntries) else { throw .malformed(.docx, "it has more than \(Self.maxEntries) entries") }
        try Self.within(directoryOffset, directorySize, total)

        var header = directoryOffset
        for index in 0..<Int(entries) {
            if index % 256 == 0 { try deadline.check() }
            guard try reader.u32(header) == 0x0201_4B50 else { throw Self.damaged }
            let versionNeeded = try reader.u16(header + 6)
            let flags = try reader.u16(header + 8)
            let method = try reader.u16(header + 10)
            let compressed32 = try reader.u32(header + 20)
            let uncompressed32 = try reader.u32(header + 24)
            let nameLength = UInt64(try reader.u16(header + 28))
            let extraLength = UInt64(try reader.u16(header + 30))
            let commentLength = UInt64(try reader.u16(header + 32))
            let disk = try reader.u16(header + 34)
            let offset32 = try reader.u32(header + 42)
            let extraStart = try Self.add(header, 46, nameLength)
            let next = try Self.add(extraStart, extraLength, commentLength)
            guard next <= total else { throw Self.damaged }

            var compressed = UInt64(compressed32), uncompressed = UInt64(uncompressed32), offset = UInt64(offset32)
            var isZIP64 = UInt8(truncatingIfNeeded: versionNeeded) >= 45
            if let field = try Self.zip64Field(reader, from: extraStart, length: extraLength) {
                // Present only for the values whose 32-bit field is all ones, in this order.
                var sizes: [UInt64] = []
                if uncompressed32 == .max { sizes.append(8) }
                if compressed32 == .max { sizes.append(8) }
                if offset32 == .max { sizes.append(8) }
                if disk == .max { sizes.append(4) }
                if sizes.reduce(0, +) == field.length {
                    isZIP64 = true
                    var at = field.start
                    if uncompressed32 == .max { uncompressed = try Self.nonZero(reader.u64(at), else: uncompressed); at += 8 }
                    if compressed32 == .max { compressed = try Self.nonZero(reader.u64(at), else: compressed); at += 8 }
                    if offset32 == .max { offset = try Self.nonZero(reader.u64(at), else: offset) }
                }
            }

            // The local header, its name and extra field, then the data.
            guard try Self.add(offset, 30, 0) <= total, try reader.u32(offset) == 0x0403_4B50 else { throw Self.damaged }
            let dataStart = try Self.add(offset, 30, UInt64(try reader.u16(offset + 26)) + UInt64(try reader.u16(offset + 28)))
            var dataSize = method != 0 ? compressed : uncompressed
            try Self.within(dataStart, dataSize, total)
            if flags & 0x08 != 0 {
                let descriptor = try Self.add(dataStart, dataSize, 0)
                let descriptorSize: UInt64 = isZIP64 ? 24 : 16
                try Self.within(descriptor, descriptorSize, total)
                if isZIP64 {
                    // ZIPFoundation takes the sizes from a ZIP64 data descriptor (its signature is optional).
                    let at = try reader.u32(descriptor) == 0x0807_4B50 ? descriptor + 8 : descriptor + 4
                    compressed = try reader.u64(at)
                    uncompressed = try reader.u64(at + 8)
                    dataSize = method != 0 ? compressed : uncompressed
                    try Self.within(dataStart, dataSize, total)
                }
            }
            // Sizes become Int64 inside ZIPFoundation.
            guard compressed <= UInt64(Int64.max), uncompressed <= UInt64(Int64.max) else { throw Self.damaged }
            header = next
        }
    }

    private static let damaged = DocumentExtractionError.malformed(.docx, "its archive structure is damaged")

    private static func nonZero(_ value: UInt64, else fallback: UInt64) -> UInt64 { value > 0 ? value : fallback }

    private static func add(_ a: UInt64, _ b: UInt64, _ c: UInt64) throws(DocumentExtractionError) -> UInt64 {
        let (ab, o1) = a.addingReportingOverflow(b)
        let (abc, o2) = ab.addingReportingOverflow(c)
        guard !o1 && !o2 else { throw Self.damaged }
        return abc
    }

    /// `start..<start+length` lies inside the archive.
    private static func within(_ start: UInt64, _ length: UInt64, _ total: UInt64) throws(DocumentExtractionError) {
        guard start <= total, try Self.add(start, length, 0) <= total else { throw Self.damaged }
    }

    /// The first extra field with ID 0x0001, found the way ZIPFoundation
    /// scans (stopping at the first field that overruns the extra data).
    private static func zip64Field(_ reader: Reader, from start: UInt64, length: UInt64) throws(DocumentExtractionError) -> (start: UInt64, length: UInt64)? {
        var at: UInt64 = 0
        while length >= 4, at < length - 4 {
            let id = try reader.u16(start + at)
            let size = UInt64(try reader.u16(start + at + 2))
            let next = at + 4 + size
            guard next <= length else { return nil }
            if id == 0x0001 { return (start + at + 4, size) }
            at = next
        }
        return nil
    }

    /// Little-endian reads that throw instead of reading past the end.
    private struct Reader {
        let bytes: [UInt8]

        func value(_ offset: UInt64, _ width: Int) throws(DocumentExtractionError) -> UInt64 {
            guard offset <= UInt64(bytes.count), UInt64(bytes.count) - offset >= UInt64(width) else { throw ZipPreflight.damaged }
            let start = Int(offset)
            var result: UInt64 = 0
            for index in (0..<width).reversed() { result = result << 8 | UInt64(self.bytes[start + index]) }
            return result
        }

        func u16(_ offset: UInt64) throws(DocumentExtractionError) -> UInt16 { UInt16(try self.value(offset, 2)) }
        func u32(_ offset: UInt64) throws(DocumentExtractionError) -> UInt32 { UInt32(try self.value(offset, 4)) }
        func u64(_ offset: UInt64) throws(DocumentExtractionError) -> UInt64 { try self.value(offset, 8) }
    }
}
