import Testing
@testable import KeelDocuments

@Suite("Format readers")
struct FormatReaderTests {
    static func extract(_ text: String, _ format: DocumentFormat) async throws -> ExtractedDocument {
        try await DocumentExtractor().extract(Array(text.utf8), format: format)
    }

    @Test func plainTextHeadings() async throws {
        let text = """
        INTRODUCTION

        Some words here. More words.

        Background and Scope
        The scope is small.

        2.1 Numbered Part

        Body of the numbered part.

        A sentence that ends with a colon:

        is not a heading, and neither is a long line written in Title Case That Goes On And On And On Well Past Eighty

        Setext Heading
        ==============

        Final words.
        """
        let document = try await Self.extract(text, .text)
        #expect(document.sections.map(\.title) == ["INTRODUCTION", "Background and Scope", "Numbered Part", "Setext Heading"])
        #expect(document.sections.map(\.level) == [1, 2, 2, 1])
        #expect(document.sections.map(\.path) == [["INTRODUCTION"], ["INTRODUCTION", "Background and Scope"], ["INTRODUCTION", "Numbered Part"], ["Setext Heading"]])
        #expect(document.sections[2].text.hasPrefix("Body of the numbered part."))
        #expect(document.sections[2].text.contains("is not a heading"))
    }

    @Test func plainTextWithoutHeadings() async throws {
        let document = try await Self.extract("just a line of text.\nand another one.", .text)
        #expect(document.sections.map(\.title) == ["Document"])
        #expect(document.sections.first?.level == 1)
        let trailing = try await Self.extract("Nothing Follows This", .text)
        #expect(trailing.sections.map(\.title) == ["Document"])
    }

    @Test func markdownFencesAndPreamble() async throws {
        let text = """
        Some intro text.

        ## Setup

        ```sh
        # not a heading
        make
        ```

        Setext Two
        ----------

        body

        ### Deep ###
        deep body
        """
        let document = try await Self.extract(text, .markdown)
        #expect(document.sections.map(\.title) == ["Introduction", "Setup", "Setext Two", "Deep"])
        #expect(document.sections.map(\.level) == [1, 2, 2, 3])
        #expect(document.sections[1].text.contains("# not a heading"))
        #expect(document.sections[3].path == ["Setext Two", "Deep"])
        #expect(document.title == nil)
    }

    @Test func markdownFrontMatterTitle() async throws {
        let document = try await Self.extract("---\ntitle: \"Handbook\"\n---\nWelcome.\n\n# Start\n\ntext\n", .markdown)
        #expect(document.title == "Handbook")
        #expect(document.sections.map(\.title) == ["Handbook", "Start"])
    }

    @Test func htmlEntitiesScriptsAndBreaks() async throws {
        let html = """
        <!doctype html><HTML><head><title>Caf&eacute; &amp; Bar</title><style>h1 { color: red }</style>
        <script>document.write("<h1>fake</h1>")</script></head>
        <body><p>Intro &lt;here&gt; &#8212; &#x263A; &copy 2024&nbsp;now</p>
        <h1 class=x>Menu &ndash; Today</h1><p>Soup<br>Bread</p><template><h2>hidden</h2></template>
        <table><tr><td>a</td><td>b</td></tr></table><h2>Prices</h2>   <div>  Five    euros </div><script>var x = "</div>";</script>
        </body></html>
        """
        let document = try await Self.extract(html, .html)
        #expect(document.title == "Café & Bar")
        #expect(document.sections.map(\.title) == ["Café & Bar", "Menu – Today", "Prices"])
        // A no-break space collapses like any other whitespace.
        #expect(document.sections[0].text == "Intro <here> — ☺ © 2024 now")
        #expect(document.sections[1].text == "Soup\nBread\n\na\tb")
        #expect(document.sections[2].text == "Five euros")
        #expect(document.sections[2].path == ["Menu – Today", "Prices"])
    }
}
