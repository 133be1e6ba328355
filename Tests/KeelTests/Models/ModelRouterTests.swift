import Foundation
import KeelCore
import KeelModels
import KeelServer
import Logging
import Testing

/// The router's decisions (fallback, continuation, cooldowns, limits) with
/// scripted providers and the shared health in a real store.
@Suite("Model router")
struct ModelRouterTests {
    /// A catalog of `names` on one provider, chained in that order as `default`.
    static func catalog(_ names: [String]) -> ModelCatalog {
        ModelCatalog(
            providers: [ModelCatalog.Provider(name: "p", kind: .openai, baseURL: "http://127.0.0.1:9/v1")],
            models: names.map { ModelCatalog.Model(name: $0, provider: "p", model: "id-\($0)", maxTokens: 256) },
            chains: [("default", names)])
    }

    static func limits(_ change: (inout RouterLimits) -> Void = { _ in }) -> RouterLimits {
        var limits = RouterLimits()
        limits.firstTokenTimeout = .seconds(20)
        limits.idleTimeout = .seconds(20)
        change(&limits)
        return limits
    }

    struct Run {
        var events: [RouterEvent] = []
        var error: (any Error)?
        var text: String {
            self.events.compactMap { if case .text(let piece) = $0 { piece } else { nil } }.joined()
        }
        var fallbacks: [ModelFallback] {
            self.events.compactMap { if case .fallback(let fallback) = $0 { fallback } else { nil } }
        }
        var summary: RoutingSummary? {
            self.events.lazy.compactMap { if case .finished(let summary) = $0 { summary } else { nil } }.first
        }
        var routerError: RouterError? { self.error as? RouterError }
    }

    static func run(_ router: ModelRouter, _ request: RoutedRequest = RoutedRequest(messages: [.user("hello")])) async -> Run {
        var run = Run()
        do {
            for try await event in router.stream(request) { run.events.append(event) }
        } catch {
            run.error = error
        }
        return run
    }

    static func withRouter(
        _ providers: [String: ScriptedProvider], driver: Driver = .sqlite, limits: RouterLimits = Self.limits(), metrics: KeelMetrics? = nil,
        _ body: @Sendable (ModelRouter, any KeelStore) async throws -> Void
    ) async throws {
        let names = providers.keys.sorted()
        try await StoreFixture.make(driver).withStore { store in
            let router = ModelRouter(
                catalog: Self.catalog(names), providers: providers, healthStore: store.modelHealth, limits: limits,
                metrics: metrics.map { RouterMetrics(factory: $0.factory) }, logger: TestEnvironment.logger)
            try await body(router, store)
        }
    }

    @Test("a 429 before the first token moves to the next model, names why, and cools the model for its Retry-After on the store")
    func rateLimitedFallback() async throws {
        let a = ScriptedProvider(always: [.fail(ProviderError(.rateLimited(retryAfter: .seconds(30)), "HTTP 429: slow down", status: 429))])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(3))
        try await Self.withRouter(["a": a, "b": b]) { router, store in
            let before = Date()
            let run = await Self.run(router)
            let after = Date()
            #expect(run.error == nil && run.text == "t0 t1 t2 ")
            #expect(run.fallbacks == [ModelFallback(from: "a", to: "b", reason: "rate_limited", detail: "HTTP 429: slow down", afterFirstToken: false)])
            let summary = try #require(run.summary)
            #expect(summary.answeredBy == "b" && summary.models == ["b"] && summary.usage == ["b": ChatUsage(inputTokens: 10, outputTokens: 3)])
            #expect(summary.finishReason == "stop" && summary.timeToFirstToken != nil)
            let health = try #require(try await store.modelHealth.health(models: ["a"])["a"])
            let until = try #require(health.cooldownUntil)
            #expect(until >= before.addingTimeInterval(29.9) && until <= after.addingTimeInterval(30.1) && health.cooldownReason == "rate_limited")

            // The next request skips the cooling model without calling it, and says so.
            let next = await Self.run(router)
            #expect(next.text == "t0 t1 t2 " && a.calls == 1 && b.calls == 2)
            #expect(next.fallbacks.map(\.reason) == ["cooling_down"] && next.fallbacks.first?.from == "a")
        }
    }

    @Test("a cooldown knob of zero cools nothing: the next request tries the model again")
    func zeroCooldown() async throws {
        let a = ScriptedProvider(always: [.fail(ProviderError(.rateLimited(retryAfter: nil), "HTTP 429", status: 429))])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(1))
        let limits = Self.limits {
            $0.cooldown = .zero
            $0.healthCacheAge = .zero
        }
        try await Self.withRouter(["a": a, "b": b], limits: limits) { router, store in
            for _ in 0..<3 {
                let run = await Self.run(router)
                #expect(run.fallbacks.map(\.reason) == ["rate_limited"])
            }
            #expect(a.calls == 3)
            let health = try await store.modelHealth.health(models: ["a"])
            #expect(health["a"]?.cooldownUntil == nil && health["a"]?.consecutiveFailures == 3)
        }
    }

    @Test("a 400 fails the request at once: the next model would refuse it too")
    func badRequestFails() async throws {
        let a = ScriptedProvider(always: [.fail(ProviderError(.badRequest(status: 400), "HTTP 400: messages: too long", status: 400))])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(3))
        try await Self.withRouter(["a": a, "b": b]) { router, store in
            let run = await Self.run(router)
            #expect(run.routerError?.code == .invalidRequest && run.routerError?.status == 400)
            #expect(b.calls == 0)
            let health = try await store.modelHealth.health(models: ["a"])
            #expect(health["a"]?.consecutiveFailures == 0)
        }
    }

    @Test("401 and a spent quota cool the model for long and move on")
    func credentialsCoolLong() async throws {
        let a = ScriptedProvider(always: [.fail(ProviderError(.unauthorized(status: 401), "HTTP 401: bad key", status: 401))])
        let b = ScriptedProvider(always: [.fail(ProviderError(.spendLimit, "HTTP 429: insufficient_quota", status: 429))])
        let c = ScriptedProvider(always: ScriptedProvider.tokens(2))
        let limits = Self.limits { $0.authCooldown = .seconds(900) }
        try await Self.withRouter(["a": a, "b": b, "c": c], limits: limits) { router, store in
            let run = await Self.run(router)
            #expect(run.text == "t0 t1 " && run.fallbacks.map(\.reason) == ["unauthorized", "spend_limit"])
            #expect(run.fallbacks.map(\.to) == ["b", "c"])
            let health = try await store.modelHealth.health(models: ["a", "b"])
            for name in ["a", "b"] {
                let until = try #require(health[name]?.cooldownUntil)
                #expect(until.timeIntervalSinceNow > 800)
            }
        }
    }

    @Test("a stream cut after the first tokens continues on the next model with the partial answer: no text lost, none repeated")
    func midStreamContinuation() async throws {
        let a = ScriptedProvider(always: [.text("The answer "), .text("is "), .fail(ProviderError(.truncated, "the connection closed mid-stream"))])
        let b = ScriptedProvider(always: [.text("forty-two."), .usage(40, 2), .finish("stop")])
        try await Self.withRouter(["a": a, "b": b]) { router, _ in
            let run = await Self.run(router, RoutedRequest(messages: [.system("be brief"), .user("what is it?")]))
            #expect(run.error == nil && run.text == "The answer is forty-two.")
            #expect(run.fallbacks.count == 1 && run.fallbacks[0].reason == "stream_cut" && run.fallbacks[0].afterFirstToken)
            // The fallback comes between the two models' text, where the cut was.
            let kinds = run.events.map { event -> String in
                switch event {
                case .model(let name, _): "model:\(name)"
                case .fallback: "fallback"
                case .text: "text"
                case .reasoning: "reasoning"
                case .usage: "usage"
                case .finished: "finished"
                }
            }
            #expect(kinds == ["model:a", "text", "text", "fallback", "model:b", "text", "usage", "finished"])
            let continued = try #require(b.requests.first)
            #expect(
                continued.messages == [.system("be brief"), .user("what is it?"), .assistant("The answer is "), .user(ContinuationPrompt.instruction)])
            let summary = try #require(run.summary)
            #expect(summary.models == ["a", "b"] && summary.answeredBy == "b")
        }
    }

    @Test("an in-band error, a malformed event and an idle stall mid-answer each continue on the next model")
    func midStreamFailures() async throws {
        let failures: [(ScriptedProvider.Step, String)] = [
            (.fail(ProviderError(.inBand(code: "overloaded_error"), "in-band error: overloaded")), "stream_error"),
            (.fail(ProviderError(.malformed, "a data line that is not JSON")), "malformed_stream"),
            (.pause(.seconds(60)), "idle_timeout"),
        ]
        for (failure, reason) in failures {
            let a = ScriptedProvider(always: [.text("part one, "), failure])
            let b = ScriptedProvider(always: [.text("part two."), .finish("stop")])
            let limits = Self.limits {
                $0.idleTimeout = .seconds(1)
                $0.firstTokenTimeout = .seconds(120)
            }
            try await Self.withRouter(["a": a, "b": b], limits: limits) { router, _ in
                let started = ContinuousClock.now
                let run = await Self.run(router)
                // The idle limit (1 s) applies from the first token, not after
                // the first-token limit (120 s) has passed.
                #expect(ContinuousClock.now - started < .seconds(60))
                #expect(run.text == "part one, part two.", "\(reason)")
                #expect(run.fallbacks.map(\.reason) == [reason])
                #expect(b.requests.first?.messages.suffix(2) == [.assistant("part one, "), .user(ContinuationPrompt.instruction)])
            }
            if reason == "idle_timeout" { #expect(a.cancelled == 1, "the stalled request is cancelled") }
        }
    }

    @Test("no first token within the limit moves on; the total limit ends the request")
    func timeLimits() async throws {
        let slow = ScriptedProvider(always: [.pause(.seconds(60)), .text("late")])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(1))
        try await Self.withRouter(["a": slow, "b": b], limits: Self.limits { $0.firstTokenTimeout = .seconds(3) }) { router, _ in
            let run = await Self.run(router)
            #expect(run.text == "t0 " && run.fallbacks.map(\.reason) == ["first_token_timeout"])
        }
        let dripping = ScriptedProvider(always: (0..<100).flatMap { _ in [ScriptedProvider.Step.text("x"), .pause(.milliseconds(100))] } + [.finish("stop")])
        let limits = Self.limits { $0.totalTimeout = .seconds(1) }
        try await Self.withRouter(["a": dripping, "b": ScriptedProvider(always: ScriptedProvider.tokens(1))], limits: limits) { router, _ in
            let started = ContinuousClock.now
            let run = await Self.run(router)
            #expect(run.routerError?.code == .timeout && run.routerError?.status == 504)
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(!run.text.isEmpty && run.text.allSatisfy { $0 == "x" })
        }
    }

    @Test("an answer asked for whole, from a provider that answers whole, has only the total limit; one that streams keeps its first-token limit")
    func wholeAnswerLimits() async throws {
        // Limits wide enough for a loaded CI machine (0.5 s was not: the next model's instant token came later).
        let steps: [ScriptedProvider.Step] = [.pause(.seconds(5)), .text("all at once"), .usage(10, 3), .finish("stop")]
        let limits = Self.limits {
            $0.firstTokenTimeout = .seconds(2)
            $0.idleTimeout = .seconds(2)
        }
        let whole = ScriptedProvider(answersWhole: true, always: steps)
        try await Self.withRouter(["a": whole], limits: limits) { router, _ in
            let run = await Self.run(router, RoutedRequest(messages: [.user("hello")], stream: false))
            #expect(run.error == nil && run.text == "all at once" && run.fallbacks.isEmpty)
            #expect(whole.requests.first?.stream == false)
        }
        // The same request to a provider that streams anyway: its limits hold.
        let streaming = ScriptedProvider(always: steps)
        try await Self.withRouter(["a": streaming, "b": ScriptedProvider(always: ScriptedProvider.tokens(1))], limits: limits) { router, _ in
            let run = await Self.run(router, RoutedRequest(messages: [.user("hello")], stream: false))
            #expect(run.text == "t0 " && run.fallbacks.map(\.reason) == ["first_token_timeout"])
        }
        // And a whole answer still ends at the total limit.
        let late = ScriptedProvider(answersWhole: true, always: [.pause(.seconds(60)), .text("late"), .finish("stop")])
        try await Self.withRouter(["a": late], limits: Self.limits { $0.totalTimeout = .seconds(1) }) { router, _ in
            let started = ContinuousClock.now
            let run = await Self.run(router, RoutedRequest(messages: [.user("hello")], stream: false))
            #expect(run.routerError?.code == .timeout && ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test("when every model fails, another pass waits for the shortest Retry-After; a wait past the limit fails with it")
    func chainRetry() async throws {
        let a = ScriptedProvider { call in
            call == 0 ? [.fail(ProviderError(.rateLimited(retryAfter: .milliseconds(400)), "HTTP 429", status: 429))] : ScriptedProvider.tokens(2)
        }
        let b = ScriptedProvider(always: [.fail(ProviderError(.serverError(status: 503), "HTTP 503", status: 503))])
        try await Self.withRouter(["a": a, "b": b]) { router, _ in
            let started = ContinuousClock.now
            let run = await Self.run(router)
            #expect(run.text == "t0 t1 " && a.calls == 2 && b.calls == 1)
            #expect(ContinuousClock.now - started >= .milliseconds(400))
            #expect(run.fallbacks.map(\.reason) == ["rate_limited", "server_error"])
        }
        let long = ScriptedProvider(always: [.fail(ProviderError(.rateLimited(retryAfter: .seconds(120)), "HTTP 429", status: 429))])
        try await Self.withRouter(["a": long], limits: Self.limits { $0.maxRetryWait = .seconds(5) }) { router, _ in
            let run = await Self.run(router)
            let error = try #require(run.routerError)
            #expect(error.code == .modelsUnavailable && error.status == 503 && long.calls == 1)
            let wait = try #require(error.retryAfter)
            #expect(wait > .seconds(100) && wait <= .seconds(120))
        }
    }

    @Test("a model that fails three times in a row cools; a success starts the count again")
    func consecutiveFailures() async throws {
        let flaky = ScriptedProvider { call in
            call == 2 ? ScriptedProvider.tokens(1) : [.fail(ProviderError(.serverError(status: 500), "HTTP 500", status: 500))]
        }
        let b = ScriptedProvider(always: ScriptedProvider.tokens(1, prefix: "b"))
        let limits = Self.limits {
            $0.failuresBeforeCooldown = 2
            $0.healthCacheAge = .zero
        }
        try await Self.withRouter(["a": flaky, "b": b], limits: limits) { router, store in
            _ = await Self.run(router)
            #expect(try await store.modelHealth.health(models: ["a"])["a"]?.cooldownUntil == nil)
            _ = await Self.run(router)
            let cooled = try #require(try await store.modelHealth.health(models: ["a"])["a"])
            #expect(cooled.consecutiveFailures == 2 && cooled.cooldownUntil != nil && cooled.cooldownReason == "server_error")
            try await store.modelHealth.clearCooldown(model: "a", now: Date())
            let third = await Self.run(router)
            #expect(third.text == "t0 " && third.fallbacks.isEmpty)
            #expect(try await store.modelHealth.health(models: ["a"])["a"]?.consecutiveFailures == 0)
        }
    }

    @Test("no free connection to a model's host (--model-max-connections) moves on to the next model, and neither counts nor cools the model")
    func connectionsBusy() async throws {
        let busy = ScriptedProvider(always: [.fail(ProviderError(.busy, "every connection this process may open to the host stayed busy"))])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(2, prefix: "b"))
        let limits = Self.limits {
            $0.failuresBeforeCooldown = 1
            $0.healthCacheAge = .zero
        }
        try await Self.withRouter(["a": busy, "b": b], limits: limits) { router, store in
            for _ in 0..<3 {
                let run = await Self.run(router)
                #expect(run.text == "b0 b1 " && run.fallbacks.map(\.reason) == ["connections_busy"], "\(run.events)")
            }
            // Nothing on the shared record: other instances keep using the model.
            let health = try await store.modelHealth.health(models: ["a"])["a"]
            #expect((health?.consecutiveFailures ?? 0) == 0 && health?.cooldownUntil == nil)
        }
    }

    @Test("a model cooled by one instance is skipped by another within a second", arguments: Driver.available)
    func sharedCooldown(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let first = try fixture.openStore()
        let second = try fixture.openStore()
        try await first.withRunning {
            try await first.migrate(logger: TestEnvironment.logger)
            try await second.withRunning {
                let limited = ScriptedProvider(always: [.fail(ProviderError(.rateLimited(retryAfter: .seconds(60)), "HTTP 429", status: 429))])
                let healthy = ScriptedProvider(always: ScriptedProvider.tokens(1))
                let elsewhere = ScriptedProvider(always: ScriptedProvider.tokens(1, prefix: "a"))
                let backup = ScriptedProvider(always: ScriptedProvider.tokens(1, prefix: "b"))
                let catalog = Self.catalog(["a", "b"])
                let one = ModelRouter(
                    catalog: catalog, providers: ["a": limited, "b": healthy], healthStore: first.modelHealth, limits: Self.limits(),
                    logger: TestEnvironment.logger)
                let two = ModelRouter(
                    catalog: catalog, providers: ["a": elsewhere, "b": backup], healthStore: second.modelHealth, limits: Self.limits(),
                    logger: TestEnvironment.logger)
                // Instance two has read the health (a is fine) just now.
                #expect(await Self.run(two).text == "a0 ")
                // Instance one meets the 429 and cools a for everyone.
                #expect(await Self.run(one).fallbacks.map(\.reason) == ["rate_limited"])
                // Instance two's cached health is at most a second old: a
                // second after the cooldown was written, it must see it.
                try await Task.sleep(for: .seconds(1))
                let next = await Self.run(two)
                #expect(next.text == "b0 " && next.fallbacks.map(\.reason) == ["cooling_down"], "\(next.events)")
            }
            try await second.close()
        }
        try await first.close()
    }

    @Test("an answer a retried job already began continues from its text")
    func continuingRequest() async throws {
        let a = ScriptedProvider(always: [.text("rest."), .finish("stop")])
        try await Self.withRouter(["a": a]) { router, _ in
            let run = await Self.run(router, RoutedRequest(messages: [.user("q")], continuing: "The first half, "))
            #expect(run.text == "rest.")
            #expect(a.requests.first?.messages == [.user("q"), .assistant("The first half, "), .user(ContinuationPrompt.instruction)])
        }
    }

    @Test("cancelling the answer cancels the model request in flight")
    func cancellation() async throws {
        let a = ScriptedProvider(always: [.text("one "), .pause(.seconds(60)), .finish("stop")])
        try await Self.withRouter(["a": a]) { router, _ in
            let consumer = Task {
                for try await event in router.stream(RoutedRequest(messages: [.user("q")])) {
                    if case .text = event { return }
                }
            }
            try await consumer.value
            try await Task.sleep(for: .milliseconds(300))
            #expect(a.cancelled == 1)
        }
    }

    @Test("unknown chains are refused; requests by model name bypass the chain")
    func naming() async throws {
        let a = ScriptedProvider(always: ScriptedProvider.tokens(1, prefix: "a"))
        let b = ScriptedProvider(always: ScriptedProvider.tokens(1, prefix: "b"))
        try await Self.withRouter(["a": a, "b": b]) { router, _ in
            #expect(await Self.run(router, RoutedRequest(route: "nope", messages: [.user("q")])).routerError?.code == .unknownModel)
            #expect(await Self.run(router, RoutedRequest(route: "b", messages: [.user("q")])).text == "b0 ")
            #expect(a.calls == 0)
        }
    }

    @Test("metrics: requests by model and outcome, fallbacks by reason, time to first token, tokens, cooldowns")
    func metrics() async throws {
        let metrics = KeelMetrics()
        let a = ScriptedProvider(always: [.fail(ProviderError(.overloaded, "HTTP 529", status: 529))])
        let b = ScriptedProvider(always: ScriptedProvider.tokens(4))
        try await Self.withRouter(["a": a, "b": b], metrics: metrics) { router, _ in
            _ = await Self.run(router)
            let text = String(decoding: metrics.render(), as: UTF8.self)
            for line in [
                #"keel_model_requests_total{model="a",outcome="overloaded"} 1"#,
                #"keel_model_requests_total{model="b",outcome="success"} 1"#,
                #"keel_model_fallbacks_total{from="a",reason="overloaded"} 1"#,
                #"keel_model_tokens_total{model="b",direction="in"} 10"#,
                #"keel_model_tokens_total{model="b",direction="out"} 4"#,
                #"keel_model_cooldowns_total{model="a",reason="overloaded"} 1"#,
                #"keel_model_time_to_first_token_seconds_count{model="b"} 1"#,
            ] {
                #expect(text.contains(line), "missing \(line)")
            }
        }
    }
}
