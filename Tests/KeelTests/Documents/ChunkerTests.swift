import Testing
@testable import KeelDocuments

@Suite("Chunker")
struct ChunkerTests {
    static func section(_ title: String, _ text: String) -> ExtractedSection {
        ExtractedSection(title: title, level: 1, path: ["Doc", title], text: text)
    }

    static func squeezed(_ text: String) -> String { text.filter { !$0.isWhitespace } }

    @Test func passagesStayInSectionsAndCoverTheText() {
        let sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
        let long = (0..<40).map { i in String(repeating: sentence, count: 3) + (i % 4 == 3 ? "\n\n" : "") }.joined()
        let sections = [Self.section("A", long), Self.section("Empty", ""), Self.section("B", "Short text.")]
        let passages = Chunker.passages(of: sections, target: 500)
        #expect(passages.allSatisfy { !$0.text.isEmpty })
        #expect(!passages.contains { $0.sectionIndex == 1 })
        for index in [0, 2] {
            let own = passages.filter { $0.sectionIndex == index }
            #expect(own.map(\.ordinal) == Array(0..<own.count))
            #expect(Self.squeezed(own.map(\.text).joined()) == Self.squeezed(sections[index].text))
            #expect(own.allSatisfy { $0.heading == "Doc › \(sections[index].title)" })
        }
        let first = passages.filter { $0.sectionIndex == 0 }
        #expect(first.count > 10)
        #expect(first.dropLast().allSatisfy { $0.text.count >= 250 && $0.text.count <= 500 })
        #expect(first.dropLast().allSatisfy { $0.text.hasSuffix(".") })
        #expect(passages.last?.text == "Short text.")
    }

    @Test func longWordIsSplit() {
        let word = String(repeating: "x", count: 2500)
        let passages = Chunker.passages(of: [Self.section("W", word)], target: 1000)
        #expect(passages.map(\.text.count) == [1000, 1000, 500])
        #expect(passages.map(\.text).joined() == word)
    }

    @Test func unicodeIsNeverCut() {
        let text = String(repeating: "👩‍👩‍👧‍👦é漢", count: 700)
        let passages = Chunker.passages(of: [Self.section("U", text)], target: 300)
        #expect(passages.map(\.text).joined() == text)
        #expect(passages.allSatisfy { $0.text.count <= 300 && $0.text.unicodeScalars.first != "\u{200D}" })
    }
}
