import Testing
import HummingbirdTesting
import AsyncHTTPClient
@Test func smoke() { #expect(1 == 1) }
