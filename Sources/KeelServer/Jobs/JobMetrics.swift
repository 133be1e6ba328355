import Metrics
import Synchronization

/// The job and stream metrics, as Prometheus series.
final class JobMetrics: Sendable {
    let metrics: KeelMetrics
    let leaseRescues: Metrics.Counter
    let leasesLost: Metrics.Counter
    let workerHeartbeats: Metrics.Counter
    /// Claims that got a job, and claims that found none (a worker woken for
    /// a job another worker took first, or a poll of an empty queue).
    let claimsWithJob: Metrics.Counter
    let claimsEmpty: Metrics.Counter
    let queueDepth: Metrics.Gauge
    let busyWorkers: Metrics.Gauge
    let openStreamsGauge: Metrics.Gauge
    let streamResumes: Metrics.Counter
    let streamHeartbeats: Metrics.Counter
    /// Streams whose client went away before the job's last event.
    let streamClientsGone: Metrics.Counter
    private let busy = Atomic<Int>(0)
    private let streams = Atomic<Int>(0)
    /// Handles by label and dimensions, made once: these are recorded for every job.
    private let counters = Mutex<[CounterKey: Metrics.Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])

    init(_ metrics: KeelMetrics) {
        self.metrics = metrics
        self.leaseRescues = metrics.counter("keel_job_lease_rescues_total")
        self.leasesLost = metrics.counter("keel_job_leases_lost_total")
        self.workerHeartbeats = metrics.counter("keel_job_heartbeats_total")
        self.claimsWithJob = metrics.counter("keel_job_claims_total", [("outcome", "job")])
        self.claimsEmpty = metrics.counter("keel_job_claims_total", [("outcome", "empty")])
        self.queueDepth = metrics.gauge("keel_job_queue_depth")
        self.busyWorkers = metrics.gauge("keel_workers_busy")
        self.openStreamsGauge = metrics.gauge("keel_sse_open_streams")
        self.streamResumes = metrics.counter("keel_sse_resumes_total")
        self.streamHeartbeats = metrics.counter("keel_sse_heartbeats_total")
        self.streamClientsGone = metrics.counter("keel_sse_clients_gone_total")
    }

    func created(type: String) {
        self.counter("keel_jobs_created_total", [("type", type)]).increment()
    }

    func finished(type: String, status: String) {
        self.counter("keel_jobs_finished_total", [("type", type), ("status", status)]).increment()
    }

    func retried(type: String) {
        self.counter("keel_job_retries_total", [("type", type)]).increment()
    }

    func recordRun(type: String, duration: Duration) {
        let timer = self.timers.withLock { timers in
            if let timer = timers[type] { return timer }
            let timer = Metrics.Timer(label: "keel_job_run_duration_seconds", dimensions: [("type", type)], factory: self.metrics.factory)
            timers[type] = timer
            return timer
        }
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// A counter's label and dimension values (each label has fixed dimension names).
    private struct CounterKey: Hashable {
        var label: String
        var values: [String]
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Metrics.Counter {
        let key = CounterKey(label: label, values: dimensions.map(\.1))
        return self.counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = self.metrics.counter(label, dimensions)
            counters[key] = counter
            return counter
        }
    }

    func workerBusy(_ delta: Int) {
        let now = self.busy.add(delta, ordering: .relaxed).newValue
        self.busyWorkers.record(now)
    }

    var busyCount: Int { self.busy.load(ordering: .relaxed) }

    func streamOpened() {
        self.openStreamsGauge.record(self.streams.add(1, ordering: .relaxed).newValue)
    }

    func streamClosed() {
        self.openStreamsGauge.record(self.streams.subtract(1, ordering: .relaxed).newValue)
    }

    var openStreams: Int { self.streams.load(ordering: .relaxed) }
}
