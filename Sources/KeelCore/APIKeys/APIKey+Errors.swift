extension KeelError {
    /// A key not revoked already has this name (409 `key_name_taken`).
    public static func keyNameTaken(_ name: String) -> KeelError {
        KeelError(
            .keyNameTaken,
            "A key named '\(name)' exists and is not revoked.",
            hint: "Choose another name, or revoke that key first (keel keys revoke \(name))."
        )
    }
}
