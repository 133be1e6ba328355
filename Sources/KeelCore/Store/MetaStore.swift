/// Small named values shared by every instance (for example the generated
/// session signing secret).
public protocol MetaStore: Sendable {
    func metaValue(forKey key: String) async throws -> String?

    /// Stores `value` unless the key already has one, and returns the value
    /// that is stored afterwards: the first writer wins, everyone agrees.
    func insertMetaValueIfAbsent(_ value: String, forKey key: String) async throws -> String
}
