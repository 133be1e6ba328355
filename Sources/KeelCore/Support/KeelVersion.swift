public enum KeelVersion { public static let current = "0.1.0" }
