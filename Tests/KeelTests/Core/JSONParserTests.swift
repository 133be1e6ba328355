import Foundation
import KeelCore
import Testing

@Suite("JSON parsing and serialization")
struct JSONParserTests {
    static func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test("values, escapes and surrogate pairs")
    func values() throws {
        #expect(try Self.parse(#" {"a":[1,-2.5,3e2,true,false,null],"b":"x\"y\\z\/\n\t\u00e9\ud83d\ude00"} "#) == .object([
            "a": .array([.int(1), .double(-2.5), .double(300), .bool(true), .bool(false), .null]),
            "b": .string("x\"y\\z/\n\tÃ©😀".replacingOccurrences(of: "Ã©", with: "é")),
        ]))
        #expect(try Self.parse("\"héllo\"") == .string("héllo"))
        #expect(try Self.parse("0") == .int(0))
        #expect(try Self.parse("-0.0") == .double(0))
        #expect(try Self.parse("9223372036854775807") == .int(Int64.max))
        #expect(try Self.parse("9223372036854775808") == .double(9_223_372_036_854_775_808))
        #expect(try Self.parse("{}") == .object([:]))
        #expect(try Self.parse("[]") == .array([]))
    }

    @Test("invalid documents are invalid_json", arguments: [
        "", " ", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "\"abc", "\"a\u{01}b\"",
        "\"\\x\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\u12G4\"", "{} {}", "[1] x", "NaN", "Infinity", "1e999",
        String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
    ])
    func invalid(_ text: String) {
        #expect(throws: KeelError.self) { try Self.parse(text) }
        do {
            _ = try Self.parse(text)
        } catch let error as KeelError {
            #expect(error.code == .invalidJSON)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: KeelError.self) { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test("serialization is compact, sorted, escaped, and parses back to the same value")
    func roundTrip() throws {
        let value = JSONValue.object([
            "z": .int(1), "a": .array([.double(1.5), .double(2), .string("q\"\\\n\u{01}/"), .null, .bool(true)]), "m": .object(["k": .string("é😀")]),
        ])
        let text = value.serialized()
        #expect(text == #"{"a":[1.5,2.0,"q\"\\\n\u0001/",null,true],"m":{"k":"é😀"},"z":1}"#)
        #expect(try Self.parse(text) == value)
    }

    @Test("the writer: integers at their limits, escaped keys, dates, nulls and raw elements")
    func writer() {
        var json = JSONWriter()
        json.object { json in
            json.field("min", Int64.min)
            json.field("max", Int64.max)
            json.field("zero", Int64(0))
            json.field("neg", Int64(-42))
            json.field("k\"ey\t", "v\u{1F}é")
            json.field("when", Date(timeIntervalSince1970: -0.5))
            json.field("none", nil as Date?)
            json.field("list") { json in
                json.array { json in
                    json.element(rawJSON: "1")
                    json.element(rawJSON: "{}")
                }
            }
        }
        #expect(
            json.text
                == #"{"min":-9223372036854775808,"max":9223372036854775807,"zero":0,"neg":-42,"k\"ey\t":"v\u001fé","when":"1969-12-31T23:59:59.500Z","none":null,"list":[1,{}]}"#
        )
    }
}
