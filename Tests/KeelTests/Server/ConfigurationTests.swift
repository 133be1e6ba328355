import Foundation
import KeelCore
import KeelPostgres
import Logging
import PostgresNIO
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    @Test("flags override the environment, which overrides the file")
    func precedence() throws {
        let file = Data(#"{"port": 7000, "host": "0.0.0.0", "session_idle_timeout": "2h", "cors-origins": ["https://a.example", "https://b.example"]}"#.utf8)
        let loader = ConfigurationLoader(
            flags: ["port": "9000"],
            environment: ["KEEL_PORT": "8000", "KEEL_HOST": "10.0.0.1", "KEEL_DRAIN_DELAY": "250ms"],
            file: file
        )
        let configuration = try loader.load()
        #expect(configuration.port == 9000)
        #expect(configuration.host == "10.0.0.1")
        #expect(configuration.session.idleTimeout == .seconds(7200))
        #expect(configuration.drainDelay == .milliseconds(250))
        #expect(configuration.cors.allowedOrigins == ["https://a.example", "https://b.example"])
        #expect(configuration.store == .sqlite(path: "./keel-data/keel.sqlite"))
    }

    @Test("bad values are refused with the knob's name and what is expected")
    func badValues() throws {
        let cases: [(String, String)] = [
            ("port", "eighty"), ("port", "70000"), ("store", "mysql://x"), ("drain-timeout", "soon"),
            ("cookie-secure", "sometimes"), ("cors-credentials", "maybe"), ("cors-origins", "https://app.example.com/"),
            ("secret", "short"), ("log-level", "loud"), ("header-timeout", "0s"), ("idle-timeout", "never"), ("body-timeout", "-1"),
            ("linger-timeout", "0"), ("max-connections", "-5"), ("ops-token", "short"), ("trusted-proxies", "10.0.0.0/33"),
            ("trusted-proxies", "proxy.internal"), ("session-create-rate", "lots"), ("session-max-active-jobs", "-1"), ("job-max-events", "5"),
            ("demo-jobs", "perhaps"), ("upload-digest-inline-max", "-1"), ("upload-orphan-retention", "soon"), ("model-workers", "-1"),
            ("model-workers", "many"), ("model-max-connections", "0"),
        ]
        for (knob, value) in cases {
            let error = #expect(throws: KeelError.self, "\(knob)=\(value)") {
                try ConfigurationLoader(flags: [knob: value]).load()
            }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.hint != nil || error?.message.contains(knob) == true)
        }
        // A model lane larger than the connections to one model host would fail answers after the connect timeout.
        let lane = #expect(throws: KeelError.self) {
            try ConfigurationLoader(flags: ["models": "/etc/keel/models.json", "model-workers": "600"]).load()
        }
        #expect(lane?.message.contains("--model-max-connections 512") == true && lane?.hint?.contains("Raise --model-max-connections") == true)
        let sized = try ConfigurationLoader(flags: ["models": "/etc/keel/models.json", "model-workers": "600", "model-max-connections": "600"]).load()
        #expect(sized.jobs.modelWorkers == 600 && sized.models.maxConnections == 600)
        let defaults = try ConfigurationLoader().load()
        #expect(defaults.jobs.modelWorkers == 256 && defaults.models.maxConnections == 512 && defaults.jobs.workers == 4)
        #expect(throws: KeelError.self) { try ConfigurationLoader(file: Data(#"{"prot": 1}"#.utf8)).load() }
        #expect(throws: KeelError.self) { try ConfigurationLoader(file: Data("port=1".utf8)).load() }
    }

    @Test("the hardening knobs load from flags, environment and file")
    func hardeningKnobs() throws {
        let configuration = try ConfigurationLoader(
            flags: ["header-timeout": "3s", "max-connections": "500", "trusted-proxies": "10.0.0.0/8, ::1"],
            environment: ["KEEL_OPS_TOKEN": "0123456789abcdef0123", "KEEL_SESSION_CREATE_RATE": "0", "KEEL_DEMO_JOBS": "true"],
            file: Data(#"{"idle_timeout": "90s", "body-timeout": "5s", "linger-timeout": "2s", "session-max-active-jobs": 4, "job-max-events": 100, "upload-digest-inline-max": 1024, "upload-orphan-retention": "0"}"#.utf8)
        ).load()
        #expect(configuration.connections.headerTimeout == .seconds(3))
        #expect(configuration.connections.idleTimeout == .seconds(90))
        #expect(configuration.connections.bodyTimeout == .seconds(5))
        #expect(configuration.connections.lingerTimeout == .seconds(2))
        #expect(configuration.connections.maxConnections == 500 && configuration.connections.effectiveMaxConnections == 500)
        #expect(configuration.trustedProxies == ["10.0.0.0/8", "::1"])
        #expect(configuration.opsToken == "0123456789abcdef0123")
        #expect(configuration.quotas.sessionCreatesPerMinute == 0 && configuration.quotas.activeJobsPerSession == 4)
        #expect(configuration.jobs.maxEvents == 100 && configuration.demoJobs)
        #expect(configuration.uploads.digestInlineMax == 1024 && configuration.uploads.orphanRetention == .zero)
        // Defaults: quotas on, demo jobs off, no token, the connection limit from the file descriptor limit.
        let defaults = try ConfigurationLoader().load()
        #expect(!defaults.demoJobs && defaults.opsToken == nil && defaults.quotas.sessionCreatesPerMinute == 60)
        #expect(defaults.connections.effectiveMaxConnections >= 16)
    }

    @Test("addresses and CIDR blocks: IPv4, IPv6, IPv4-mapped")
    func addressBlocks() throws {
        let private10 = try #require(AddressBlock(parsing: "10.0.0.0/8"))
        #expect(private10.contains("10.1.2.3") && !private10.contains("11.0.0.1") && private10.contains("::ffff:10.9.9.9"))
        let v6 = try #require(AddressBlock(parsing: "fd00::/8"))
        #expect(v6.contains("fd12::1") && !v6.contains("fe80::1") && !v6.contains("10.0.0.1"))
        #expect(AddressBlock(parsing: "127.0.0.1")?.contains("127.0.0.2") == false)
        #expect(AddressBlock(parsing: "1.2.3.4/33") == nil && AddressBlock(parsing: "host.example") == nil)
        #expect(AddressBlock.isLoopback("127.0.0.1") && AddressBlock.isLoopback("::1") && !AddressBlock.isLoopback("192.168.1.1"))
    }

    @Test("store locations parse, and passwords never show in descriptions")
    func storeLocation() throws {
        #expect(try StoreLocation(parsing: "sqlite:/var/lib/keel/db.sqlite") == .sqlite(path: "/var/lib/keel/db.sqlite"))
        let postgres = try StoreLocation(parsing: "postgres://keel:hunter2@db:5432/keel")
        #expect(!postgres.description.contains("hunter2"))
    }

    @Test("every knob has an environment variable and help naming its default")
    func knobsDocumented() {
        for knob in ConfigurationKnob.all {
            #expect(knob.help.contains(knob.environmentVariable))
            #expect(knob.help.contains("default"))
        }
    }

    @Test("PostgreSQL URL options are checked before anything connects")
    func postgresURLOptions() throws {
        let logger = Logger(label: "test")
        for query in [
            "pool_size=1", "pool_size=lots", "session_reads=0", "session_reads=1001", "session_reads=two", "session_reads", "session_read_stall_ms=5", "session_read_stall_ms=soon", "job_writes=0", "job_writes=many", "job_write_stall_ms=9", "sslmode=sometimes", "startup_parameters=all",
        ] {
            let error = #expect(throws: KeelError.self, "\(query)") {
                _ = try PostgresStore(url: "postgres://keel@127.0.0.1:5432/keel?\(query)", logger: logger)
            }
            #expect(error?.code == .invalidConfiguration, "\(query)")
            #expect(error?.message.contains(String(query.prefix(while: { $0 != "=" }))) == true, "\(query)")
        }
        _ = try PostgresStore(url: "postgres://keel@127.0.0.1:5432/keel?sslmode=disable&pool_size=8&session_reads=4&session_read_stall_ms=250&job_writes=3&job_write_stall_ms=500", logger: logger)
    }

    @Test("PostgreSQL connections start with enable_bitmapscan off, unless startup_parameters=none", arguments: [nil, "planner", "none"])
    func postgresStartupParameters(option: String?) async throws {
        guard let base = TestEnvironment.postgresURL else { try StoreFixture.skipPostgres() }
        var components = try #require(URLComponents(string: base))
        if let option { components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "startup_parameters", value: option)] }
        let store = try PostgresStore(url: try #require(components.string), logger: TestEnvironment.logger)
        let setting = try await store.withRunning {
            var value = ""
            for try await row in try await store.client.query("SHOW enable_bitmapscan", logger: TestEnvironment.logger).decode(String.self) { value = row }
            return value
        }
        #expect(setting == (option == "none" ? "on" : "off"))
    }

    @Test("RFC 7396 merge patch examples")
    func mergePatchExamples() throws {
        // The examples of RFC 7396, appendix A.
        let examples: [(String, String, String)] = [
            (#"{"a":"b"}"#, #"{"a":"c"}"#, #"{"a":"c"}"#),
            (#"{"a":"b"}"#, #"{"b":"c"}"#, #"{"a":"b","b":"c"}"#),
            (#"{"a":"b"}"#, #"{"a":null}"#, #"{}"#),
            (#"{"a":"b","b":"c"}"#, #"{"a":null}"#, #"{"b":"c"}"#),
            (#"{"a":["b"]}"#, #"{"a":"c"}"#, #"{"a":"c"}"#),
            (#"{"a":"c"}"#, #"{"a":["b"]}"#, #"{"a":["b"]}"#),
            (#"{"a":{"b":"c"}}"#, #"{"a":{"b":"d","c":null}}"#, #"{"a":{"b":"d"}}"#),
            (#"{"a":[{"b":"c"}]}"#, #"{"a":[1]}"#, #"{"a":[1]}"#),
            (#"["a","b"]"#, #"["c","d"]"#, #"["c","d"]"#),
            (#"{"a":"b"}"#, #"["c"]"#, #"["c"]"#),
            (#"{"a":"foo"}"#, "null", "null"),
            (#"{"a":"foo"}"#, #""bar""#, #""bar""#),
            (#"{"e":null}"#, #"{"a":1}"#, #"{"a":1,"e":null}"#),
            (#"[1,2]"#, #"{"a":"b","c":null}"#, #"{"a":"b"}"#),
            (#"{}"#, #"{"a":{"bb":{"ccc":null}}}"#, #"{"a":{"bb":{}}}"#),
        ]
        for (target, patch, expected) in examples {
            let result = try JSONValue.parse(Array(target.utf8)).applyingMergePatch(JSONValue.parse(Array(patch.utf8)))
            #expect(result == (try JSONValue.parse(Array(expected.utf8))), "\(target) + \(patch)")
        }
    }
}

@Suite("Identifiers")
struct IdentifierTests {
    @Test("base64url matches Foundation's base64 with the URL alphabet and no padding")
    func base64URL() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let expected = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Identifiers.base64URL(bytes) == expected)
        }
        #expect(Identifiers.random().count == 43)
        #expect(Identifiers.random() != Identifiers.random())
    }
}

@Suite("Timestamps")
struct TimestampTests {
    @Test("JSON timestamps match Foundation's ISO 8601 with milliseconds")
    func matchesFoundation() {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var seconds: TimeInterval = -2_208_988_800  // 1900
        while seconds < 7_258_118_400 {  // 2200
            let date = Date(timeIntervalSince1970: seconds + 0.123)
            #expect(JSONWriter.timestamp(date) == date.formatted(style), "\(seconds)")
            seconds += 9_876_543.21
        }
        #expect(JSONWriter.timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(JSONWriter.timestamp(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00.000Z")
    }
}
