import Foundation

/// Where an upload stands.
public enum UploadStatus: String, Sendable, CaseIterable {
    /// Bytes are still arriving (or may).
    case uploading
    /// Every byte arrived; the upload can be downloaded.
    case complete
    /// Ended by its owner (tus termination); its bytes are gone.
    case terminated
    /// Left unfinished past its expiry; its bytes are gone.
    case expired
}

/// A resumable upload (tus 1.0): how long it is, how far it got, who owns it.
public struct Upload: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    /// Total size in bytes; `nil` while the client defers it (creation-defer-length).
    public var length: Int64?
    /// Bytes durably stored; never more than what is on disk or in the database.
    public var offset: Int64
    /// The `Upload-Metadata` header as the client sent it ("" when absent).
    public var metadata: String
    public var status: UploadStatus
    public var createdAt: Date
    public var updatedAt: Date
    /// Unfinished: when the janitor expires it unless bytes arrive. Finished:
    /// when retention ends (`nil`: kept until deleted).
    public var expiresAt: Date?
    public var completedAt: Date?
    /// When the completion hooks ran; `nil` for a complete upload means they
    /// still have to (the janitor retries).
    public var announcedAt: Date?
    /// SHA-256 of the whole content, hex, once computed.
    public var sha256: String?

    public init(
        id: String, sessionID: String, length: Int64?, offset: Int64 = 0, metadata: String = "", status: UploadStatus = .uploading,
        createdAt: Date, updatedAt: Date? = nil, expiresAt: Date?, completedAt: Date? = nil, announcedAt: Date? = nil, sha256: String? = nil
    ) {
        self.id = id
        self.sessionID = sessionID
        self.length = length
        self.offset = offset
        self.metadata = metadata
        self.status = status
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
        self.expiresAt = expiresAt
        self.completedAt = completedAt
        self.announcedAt = announcedAt
        self.sha256 = sha256
    }

    /// The metadata pairs, decoded (see ``UploadMetadata``).
    public var metadataPairs: [(key: String, value: String?)] {
        (try? UploadMetadata.parse(self.metadata)) ?? []
    }

    public var filename: String? { UploadMetadata.value("filename", in: self.metadataPairs) ?? UploadMetadata.value("name", in: self.metadataPairs) }
    public var filetype: String? { UploadMetadata.value("filetype", in: self.metadataPairs) ?? UploadMetadata.value("type", in: self.metadataPairs) }
}

/// A run of an upload's bytes stored as one blob: `length` bytes starting at
/// `start` in the upload, kept under `key` in the blob store.
public struct UploadSegment: Sendable, Equatable, Hashable {
    public var start: Int64
    public var length: Int64
    public var key: String

    public init(start: Int64, length: Int64, key: String) {
        self.start = start
        self.length = length
        self.key = key
    }

    public var end: Int64 { self.start + self.length }
}

/// The right to append to an upload, held by one PATCH at a time across all
/// instances. Every commit is fenced by the token.
public struct UploadLease: Sendable, Equatable {
    public var uploadID: String
    public var token: String
    public var owner: String

    public init(uploadID: String, token: String, owner: String) {
        self.uploadID = uploadID
        self.token = token
        self.owner = owner
    }
}

/// The answer to a request for an upload's lease.
public enum UploadAcquisition: Sendable, Equatable {
    /// The lease is ours; `tookOver` when a silent holder's lease was taken.
    case acquired(Upload, UploadLease, tookOver: Bool)
    /// Another PATCH holds it and wrote recently.
    case busy(owner: String, quietFor: Duration)
    /// No such upload, or it is not accepting bytes; the upload as stored, if any.
    case unavailable(Upload?)
}

/// Parses and checks the tus `Upload-Metadata` header: comma-separated pairs
/// of a key and an optional base64 value.
public enum UploadMetadata {
    public static func parse(_ header: String) throws -> [(key: String, value: String?)] {
        var pairs: [(key: String, value: String?)] = []
        var seen = Set<String>()
        for rawPair in header.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = rawPair.trimmingCharacters(in: .whitespaces)
            if pair.isEmpty {
                if header.trimmingCharacters(in: .whitespaces).isEmpty { continue }
                throw KeelError(.invalidInput, "Upload-Metadata has an empty pair.", hint: "Send key base64value pairs separated by commas.")
            }
            let parts = pair.split(separator: " ", omittingEmptySubsequences: true)
            guard (1...2).contains(parts.count) else {
                throw KeelError(.invalidInput, "Upload-Metadata pair '\(pair)' is not a key and one base64 value.", hint: "Send key base64value pairs separated by commas.")
            }
            let key = String(parts[0])
            guard key.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0 != "," }) else {
                throw KeelError(.invalidInput, "Upload-Metadata key '\(key)' has characters other than visible ASCII.")
            }
            guard seen.insert(key).inserted else {
                throw KeelError(.invalidInput, "Upload-Metadata repeats the key '\(key)'.", hint: "Each key may appear once.")
            }
            var value: String?
            if parts.count == 2 {
                guard let data = Data(base64Encoded: String(parts[1])) else {
                    throw KeelError(.invalidInput, "Upload-Metadata value of '\(key)' is not valid base64.", hint: "Encode each value with standard base64 (RFC 4648 §4), padding included.")
                }
                value = String(decoding: data, as: UTF8.self)
            }
            pairs.append((key, value))
        }
        return pairs
    }

    static func value(_ key: String, in pairs: [(key: String, value: String?)]) -> String? {
        pairs.first { $0.key == key }?.value ?? nil
    }
}
