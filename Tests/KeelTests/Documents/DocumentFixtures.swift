import Foundation

/// The fixtures made by scripts/make-document-fixtures.py.
enum DocumentFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Documents
        .deletingLastPathComponent()  // KeelTests
        .deletingLastPathComponent()  // Tests
        .appendingPathComponent("Fixtures/documents")

    static func bytes(_ name: String) throws -> [UInt8] {
        try [UInt8](Data(contentsOf: directory.appendingPathComponent(name)))
    }

    /// Whitespace runs as one space, so wrapped lines compare equal.
    static func flat(_ text: String) -> String {
        text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }
}
