extension Job {
    /// The job as the API shows it, and as the data of its `done` event.
    public func jsonRepresentation() -> String {
        var json = JSONWriter()
        json.object { json in
            json.field("id", self.id)
            json.field("type", self.type)
            json.field("status", self.status.rawValue)
            json.field("progress") { json in
                json.object { json in
                    json.field("stage", self.progress.stage)
                    json.field("percent", self.progress.percent)
                    json.field("message", self.progress.message)
                }
            }
            json.field("input", rawJSON: self.inputJSON)
            json.field("result", rawJSON: self.resultJSON)
            if let error = self.error {
                json.field("error") { json in
                    json.object { json in
                        json.field("code", error.code)
                        json.field("message", error.message)
                    }
                }
            } else {
                json.field("error", rawJSON: nil)
            }
            json.field("attempts", Int64(self.attempts))
            json.field("max_attempts", Int64(self.maxAttempts))
            json.field("cancel_requested", self.cancelRequested)
            // Which worker holds the job while it runs (instance/worker).
            json.field("worker", self.status == .running ? self.leaseOwner : nil)
            json.field("created_at", self.createdAt)
            json.field("updated_at", self.updatedAt)
            json.field("started_at", self.startedAt)
            json.field("finished_at", self.finishedAt)
            json.field("expires_at", self.expiresAt)
            json.field("last_event_id", self.lastSequence)
            json.field("links") { json in
                json.object { json in
                    json.field("self", "/api/jobs/\(self.id)")
                    json.field("events", "/api/jobs/\(self.id)/events")
                    json.field("cancel", "/api/jobs/\(self.id)/cancel")
                }
            }
        }
        return json.text
    }
}

extension JobProgress {
    public func jsonRepresentation() -> String {
        var json = JSONWriter()
        json.object { json in
            json.field("stage", self.stage)
            json.field("percent", self.percent)
            json.field("message", self.message)
        }
        return json.text
    }
}
