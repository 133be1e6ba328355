extension JSONValue {
    /// Applies an RFC 7396 JSON merge patch to this value and returns the result.
    ///
    /// An object patch merges member by member, `null` members delete; any other
    /// patch replaces the target whole.
    public func applyingMergePatch(_ patch: JSONValue) -> JSONValue {
        guard case .object(let patchMembers) = patch else { return patch }
        var result = self.objectValue ?? [:]
        for (key, value) in patchMembers {
            if value == .null {
                result.removeValue(forKey: key)
            } else {
                result[key] = (result[key] ?? .null).applyingMergePatch(value)
            }
        }
        return .object(result)
    }
}
