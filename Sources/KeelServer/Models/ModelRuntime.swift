import Foundation
import KeelCore
import KeelModels
import Logging
import ServiceLifecycle

/// The models of one process, loaded from `--models` at start: the router
/// modules answer with, and the service that closes the providers' HTTP
/// client once everything using it has stopped. A models file that cannot
/// work refuses the start (``KeelError`` naming the line and the fix).
struct ModelRuntime: Sendable {
    let router: ModelRouter?
    let services: [any Service]

    init(
        configuration: KeelConfiguration, store: any KeelStore, metrics: KeelMetrics, logger: Logger, clock: any KeelClock,
        environment: [String: String]
    ) throws {
        guard let service = try ModelService.load(configuration.models, environment: environment) else {
            self.router = nil
            self.services = []
            return
        }
        self.router = service.router(healthStore: store.modelHealth, metrics: metrics.factory, logger: logger, clock: clock)
        self.services = [ModelClientsService(models: service)]
        logger.info(
            "models loaded",
            metadata: [
                "keel.models.file": "\(service.source)", "keel.models": "\(service.catalog.modelOrder.joined(separator: ","))",
                "keel.models.chains": "\(service.catalog.chainOrder.joined(separator: ","))",
            ])
    }
}

/// Closes the model providers' HTTP client at shutdown, after the server
/// and the workers (services stop in reverse order; this one comes first).
struct ModelClientsService: Service {
    let models: ModelService

    func run() async throws {
        try? await gracefulShutdown()
        await self.models.shutdown()
    }
}
