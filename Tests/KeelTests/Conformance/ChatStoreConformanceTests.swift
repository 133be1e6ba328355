import Foundation
import KeelCore
import Testing

/// The contract of `ChatStore`, run unchanged on every driver.
@Suite("Chat store conformance")
struct ChatStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func chat(_ id: String, session: String = "s1", at offset: TimeInterval = 0) -> Chat {
        Chat(id: id, sessionID: session, title: "Chat \(id)", createdAt: t0.addingTimeInterval(offset))
    }

    static func question(_ id: String, chat: String, _ text: String = "What changed?", at offset: TimeInterval) -> ChatMessageRecord {
        ChatMessageRecord(id: id, chatID: chat, role: "user", content: text, createdAt: t0.addingTimeInterval(offset))
    }

    static func reply(
        _ id: String, chat: String, job: String, attempt: Int, _ text: String, status: ChatMessageStatus = .complete,
        metadata: [String: JSONValue] = [:], at offset: TimeInterval
    ) -> ChatMessageRecord {
        ChatMessageRecord(
            id: id, chatID: chat, role: "assistant", content: text, status: status, jobID: job, attempt: attempt, metadata: metadata,
            createdAt: t0.addingTimeInterval(offset))
    }

    @Test("a chat belongs to its session: another session neither lists, reads, renames nor deletes it", arguments: Driver.available)
    func ownership(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            try await chats.createChat(Self.chat("c1"))
            try await chats.createChat(Self.chat("c2", session: "s2", at: 1))
            #expect(try await chats.chats(sessionID: "s1", limit: 10, before: nil).map(\.id) == ["c1"])
            #expect(try await chats.chats(sessionID: "s2", limit: 10, before: nil).map(\.id) == ["c2"])
            #expect(try await chats.chats(sessionID: "s3", limit: 10, before: nil).isEmpty)
            #expect(try await chats.chat(id: "c1", sessionID: "s1") == Self.chat("c1"))
            #expect(try await chats.chat(id: "c1", sessionID: "s2") == nil)
            #expect(try await chats.chat(id: "missing", sessionID: "s1") == nil)

            try await chats.appendMessage(Self.question("m1", chat: "c1", at: 1), sessionID: "s1")
            #expect(try await chats.messages(chatID: "c1", sessionID: "s2").isEmpty)
            #expect(try await chats.messages(chatID: "c1", sessionID: "s1").map(\.id) == ["m1"])
            #expect(try await chats.renameChat(id: "c1", sessionID: "s2", title: "Stolen", now: Self.t0.addingTimeInterval(2)) == false)
            #expect(try await chats.deleteChat(id: "c1", sessionID: "s2") == false)
            #expect(try await chats.chat(id: "c1", sessionID: "s1")?.title == "Chat c1")

            #expect(try await chats.renameChat(id: "c1", sessionID: "s1", title: "What changed?", now: Self.t0.addingTimeInterval(2)))
            #expect(try await chats.chat(id: "c1", sessionID: "s1")?.title == "What changed?")
            #expect(try await chats.renameChat(id: "missing", sessionID: "s1", title: "x", now: Self.t0) == false)
        }
    }

    @Test("chats list most recently updated first, and the cursor pages them in a stable order through equal times", arguments: Driver.available)
    func paging(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            // Five chats at the same instant, two later ones; the id breaks ties (descending).
            for id in ["a", "b", "c", "d", "e"] { try await chats.createChat(Self.chat(id)) }
            try await chats.createChat(Self.chat("f", at: 5))
            try await chats.createChat(Self.chat("g", at: 3))
            try await chats.createChat(Self.chat("other", session: "s2", at: 10))
            var seen: [String] = []
            var before: (Date, String)?
            while true {
                let page = try await chats.chats(sessionID: "s1", limit: 2, before: before)
                #expect(page.count <= 2)
                if page.isEmpty { break }
                seen += page.map(\.id)
                before = page.last.map { ($0.updatedAt, $0.id) }
            }
            #expect(seen == ["f", "g", "e", "d", "c", "b", "a"])

            // A message moves its chat to the front.
            try await chats.appendMessage(Self.question("m1", chat: "b", at: 20), sessionID: "s1")
            #expect(try await chats.chats(sessionID: "s1", limit: 3, before: nil).map(\.id) == ["b", "f", "g"])
        }
    }

    @Test("messages come oldest first; a message to a missing or foreign chat is not found", arguments: Driver.available)
    func messages(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            try await chats.createChat(Self.chat("c1"))
            try await chats.createChat(Self.chat("c2", session: "s2"))
            try await chats.appendMessage(Self.question("m1", chat: "c1", "First?", at: 1), sessionID: "s1")
            try await chats.recordReply(Self.reply("m2", chat: "c1", job: "j1", attempt: 1, "First.", at: 2))
            try await chats.appendMessage(Self.question("m3", chat: "c1", "Second?", at: 3), sessionID: "s1")
            // Two in the same millisecond keep the order they were stored in.
            try await chats.recordReply(Self.reply("m4", chat: "c1", job: "j2", attempt: 1, "Second.", at: 3))
            let messages = try await chats.messages(chatID: "c1", sessionID: "s1")
            #expect(messages.map(\.id) == ["m1", "m2", "m3", "m4"])
            #expect(messages[0] == Self.question("m1", chat: "c1", "First?", at: 1))
            #expect(messages[1] == Self.reply("m2", chat: "c1", job: "j1", attempt: 1, "First.", at: 2))
            let chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 4 && chat.updatedAt == Self.t0.addingTimeInterval(3))

            await expectKeelError(.notFound, "a missing chat") {
                try await chats.appendMessage(Self.question("x1", chat: "missing", at: 4), sessionID: "s1")
            }
            await expectKeelError(.notFound, "another session's chat") {
                try await chats.appendMessage(Self.question("x2", chat: "c2", at: 4), sessionID: "s1")
            }
            #expect(try await chats.messages(chatID: "c2", sessionID: "s2").isEmpty)
            #expect(try await chats.chat(id: "c2", sessionID: "s2")?.messageCount == 0)
        }
    }

    @Test("a reply is fenced by its attempt: higher or equal replaces, lower changes nothing; the chat counts it once", arguments: Driver.available)
    func fencing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            try await chats.createChat(Self.chat("c1"))
            try await chats.appendMessage(Self.question("m1", chat: "c1", at: 1), sessionID: "s1")
            #expect(try await chats.recordReply(Self.reply("r1", chat: "c1", job: "j1", attempt: 1, "Partial", status: .failed, at: 2)))
            var chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 2 && chat.updatedAt == Self.t0.addingTimeInterval(2))

            // The job's second attempt replaces the first one's answer (same message, same place).
            let second = Self.reply(
                "r2", chat: "c1", job: "j1", attempt: 2, "The whole answer", metadata: ["models": .array([.string("m-a")])], at: 5)
            #expect(try await chats.recordReply(second))
            var messages = try await chats.messages(chatID: "c1", sessionID: "s1")
            #expect(messages.count == 2)
            #expect(messages[1].id == "r1" && messages[1].content == "The whole answer" && messages[1].status == .complete)
            #expect(messages[1].attempt == 2 && messages[1].metadata == ["models": .array([.string("m-a")])])
            #expect(messages[1].createdAt == Self.t0.addingTimeInterval(2))
            chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 2 && chat.updatedAt == Self.t0.addingTimeInterval(2))

            // A late write from the first attempt changes nothing.
            #expect(try await chats.recordReply(Self.reply("r3", chat: "c1", job: "j1", attempt: 1, "Stale", status: .failed, at: 6)) == false)
            messages = try await chats.messages(chatID: "c1", sessionID: "s1")
            #expect(messages.count == 2 && messages[1].content == "The whole answer" && messages[1].attempt == 2)

            // The same attempt writes again: the user stopped it after the text.
            #expect(try await chats.recordReply(Self.reply("r4", chat: "c1", job: "j1", attempt: 2, "The whole answer", status: .stopped, at: 7)))
            messages = try await chats.messages(chatID: "c1", sessionID: "s1")
            #expect(messages.count == 2 && messages[1].status == .stopped && messages[1].metadata.isEmpty)
            chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 2 && chat.updatedAt == Self.t0.addingTimeInterval(2))

            // Another job's reply is another message.
            #expect(try await chats.recordReply(Self.reply("r5", chat: "c1", job: "j2", attempt: 1, "Next", at: 8)))
            chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 3 && chat.updatedAt == Self.t0.addingTimeInterval(8))
        }
    }

    @Test("replies written at once from two instances end with the highest attempt's, counted once", arguments: Driver.available)
    func concurrentReplies(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                try await first.chats.createChat(Self.chat("c1"))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for attempt in 1...20 {
                        let store = attempt % 2 == 0 ? first : second
                        group.addTask {
                            try await store.chats.recordReply(
                                Self.reply("r\(attempt)", chat: "c1", job: "j1", attempt: attempt, "answer \(attempt)", at: Double(attempt)))
                        }
                    }
                    try await group.waitForAll()
                }
                let messages = try await second.chats.messages(chatID: "c1", sessionID: "s1")
                #expect(messages.count == 1)
                #expect(messages.first?.content == "answer 20" && messages.first?.attempt == 20)
                #expect(try await first.chats.chat(id: "c1", sessionID: "s1")?.messageCount == 1)
            }
            try await second.close()
        }
    }

    @Test("deleting a chat deletes its messages; a reply to a deleted chat writes nothing", arguments: Driver.available)
    func deletion(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            try await chats.createChat(Self.chat("c1"))
            try await chats.createChat(Self.chat("c2"))
            try await chats.appendMessage(Self.question("m1", chat: "c1", at: 1), sessionID: "s1")
            try await chats.recordReply(Self.reply("m2", chat: "c1", job: "j1", attempt: 1, "Answer", at: 2))
            try await chats.appendMessage(Self.question("m3", chat: "c2", at: 1), sessionID: "s1")
            #expect(try await chats.deleteChat(id: "c1", sessionID: "s1"))
            #expect(try await chats.deleteChat(id: "c1", sessionID: "s1") == false)
            #expect(try await chats.chat(id: "c1", sessionID: "s1") == nil)
            #expect(try await chats.messages(chatID: "c1", sessionID: "s1").isEmpty)
            #expect(try await chats.chats(sessionID: "s1", limit: 10, before: nil).map(\.id) == ["c2"])
            #expect(try await chats.messages(chatID: "c2", sessionID: "s1").map(\.id) == ["m3"])

            // The reply job finishes after the chat was deleted.
            #expect(try await chats.recordReply(Self.reply("m4", chat: "c1", job: "j1", attempt: 2, "Late", at: 3)) == false)
            #expect(try await chats.recordReply(Self.reply("m5", chat: "c1", job: "j9", attempt: 1, "Late", at: 3)) == false)
            await expectKeelError(.notFound) { try await chats.appendMessage(Self.question("m6", chat: "c1", at: 4), sessionID: "s1") }
            // A chat created again with the same id starts empty: nothing was left behind.
            try await chats.createChat(Self.chat("c1", at: 5))
            #expect(try await chats.messages(chatID: "c1", sessionID: "s1").isEmpty)
            #expect(try await chats.chat(id: "c1", sessionID: "s1")?.messageCount == 0)
        }
    }

    @Test("chats whose session ended are removed with their messages, in batches; a live session's are kept", arguments: Driver.available)
    func orphans(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            let live = Session(id: "s1", dataJSON: "{}", version: 1, createdAt: Self.t0, lastSeenAt: Self.t0, expiresAt: Self.t0.addingTimeInterval(3600))
            try await store.sessions.createSession(live)
            try await chats.createChat(Self.chat("kept"))
            try await chats.appendMessage(Self.question("m1", chat: "kept", at: 1), sessionID: "s1")
            for index in 0..<3 {
                try await chats.createChat(Self.chat("gone\(index)", session: "ended"))
                try await chats.appendMessage(Self.question("q\(index)", chat: "gone\(index)", at: 1), sessionID: "ended")
                try await chats.recordReply(Self.reply("r\(index)", chat: "gone\(index)", job: "j\(index)", attempt: 1, "Answer", at: 2))
            }
            #expect(try await chats.removeOrphaned(limit: 2) == 2)
            #expect(try await chats.removeOrphaned(limit: 2) == 1)
            #expect(try await chats.removeOrphaned(limit: 2) == 0)
            #expect(try await chats.chats(sessionID: "ended", limit: 10, before: nil).isEmpty)
            #expect(try await chats.messages(chatID: "gone0", sessionID: "ended").isEmpty)
            #expect(try await chats.messages(chatID: "kept", sessionID: "s1").map(\.id) == ["m1"])
            // Nothing was left behind: a chat created again with a swept id starts empty.
            try await chats.createChat(Self.chat("gone1"))
            #expect(try await chats.messages(chatID: "gone1", sessionID: "s1").isEmpty)
        }
    }

    @Test(
        "a message id appended twice, or by two instances at once, is stored once; every append returns the stored message",
        arguments: Driver.available)
    func appendOnce(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let chats = first.chats
            try await chats.createChat(Self.chat("c1"))
            try await chats.createChat(Self.chat("c2"))
            let question = Self.question("m1", chat: "c1", "First?", at: 1)
            #expect(try await chats.appendMessage(question, sessionID: "s1") == question)
            // The same id again, with another text: nothing written, the first returned.
            #expect(try await chats.appendMessage(Self.question("m1", chat: "c1", "Other?", at: 5), sessionID: "s1") == question)
            #expect(try await chats.messages(chatID: "c1", sessionID: "s1") == [question])
            let chat = try #require(try await chats.chat(id: "c1", sessionID: "s1"))
            #expect(chat.messageCount == 1 && chat.updatedAt == Self.t0.addingTimeInterval(1))
            // An id is one chat's: the same id in another chat is refused, and nothing changes there.
            await expectKeelError(.internalError, "an id of another chat") {
                try await chats.appendMessage(Self.question("m1", chat: "c2", at: 6), sessionID: "s1")
            }
            #expect(try await chats.chat(id: "c2", sessionID: "s1")?.messageCount == 0)

            // Two instances race with one id, ten times: one message each time, and both returns agree.
            let second = try fixture.openStore()
            try await second.withRunning {
                for round in 0..<10 {
                    let id = "race\(round)"
                    let stored = try await withThrowingTaskGroup(of: ChatMessageRecord.self) { group in
                        for (index, store) in [first, second, first, second].enumerated() {
                            group.addTask {
                                try await store.chats.appendMessage(
                                    Self.question(id, chat: "c1", "asked by \(index)", at: 10 + Double(round)), sessionID: "s1")
                            }
                        }
                        var returned: [ChatMessageRecord] = []
                        for try await message in group { returned.append(message) }
                        return returned
                    }
                    #expect(Set(stored.map(\.content)).count == 1, "round \(round): \(stored.map(\.content))")
                    let messages = try await first.chats.messages(chatID: "c1", sessionID: "s1").filter { $0.id == id }
                    #expect(messages.map(\.content) == [stored[0].content])
                }
                #expect(try await first.chats.chat(id: "c1", sessionID: "s1")?.messageCount == 11)
            }
            try await second.close()
        }
    }

    @Test("a chat deleted while two instances write replies to it leaves no message behind", arguments: Driver.available)
    func deletionRace(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                for round in 0..<5 {
                    let chat = "c\(round)"
                    try await first.chats.createChat(Self.chat(chat))
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for index in 0..<20 {
                            let store = index % 2 == 0 ? first : second
                            group.addTask {
                                if index == 10 {
                                    #expect(try await store.chats.deleteChat(id: chat, sessionID: "s1"))
                                } else {
                                    try await store.chats.recordReply(
                                        Self.reply("\(chat)-r\(index)", chat: chat, job: "j\(index % 4)", attempt: index, "answer \(index)", at: 1))
                                }
                            }
                        }
                        try await group.waitForAll()
                    }
                    // Created again, the chat shows whatever the replies left behind: nothing.
                    try await second.chats.createChat(Self.chat(chat, at: 2))
                    #expect(try await first.chats.messages(chatID: chat, sessionID: "s1").isEmpty)
                    #expect(try await first.chats.chat(id: chat, sessionID: "s1")?.messageCount == 0)
                }
            }
            try await second.close()
        }
    }

    @Test("metadata is stored and returned as given: nested objects, arrays, numbers, unicode", arguments: Driver.available)
    func metadata(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let chats = store.chats
            try await chats.createChat(Self.chat("c1"))
            let metadata: [String: JSONValue] = [
                "sources": .array([
                    .object(["document": .string("d1"), "section": .int(3), "title": .string("Résumé — 概要 🚀")]),
                    .object(["document": .string("d2"), "section": .int(0), "quote": .string("line \"one\"\nline\ttwo \\ end")]),
                ]),
                "models": .array([.string("small"), .string("large")]),
                "fallbacks": .array([]),
                "usage": .object(["input": .int(1234), "output": .int(56), "cost": .double(0.0125), "cached": .bool(false), "note": .null]),
                "empty": .object([:]),
            ]
            let question = ChatMessageRecord(
                id: "m1", chatID: "c1", role: "user", content: "Ünïcödé? 你好", metadata: ["documents": .array([.string("d1")])],
                createdAt: Self.t0.addingTimeInterval(1))
            try await chats.appendMessage(question, sessionID: "s1")
            try await chats.recordReply(Self.reply("m2", chat: "c1", job: "j1", attempt: 1, "Answer 🙂", metadata: metadata, at: 2))
            let messages = try await chats.messages(chatID: "c1", sessionID: "s1")
            #expect(messages.count == 2)
            #expect(messages.first == question)
            #expect(messages.last?.metadata == metadata && messages.last?.content == "Answer 🙂")
        }
    }
}
