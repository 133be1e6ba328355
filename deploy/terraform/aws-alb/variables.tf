variable "name" {
  description = "Name prefix for the load balancer and its parts."
  type        = string
  default     = "keel"
}

variable "vpc_id" {
  description = "VPC of the Keel instances."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets (two or more availability zones) for the load balancer."
  type        = list(string)
}

variable "instance_ids" {
  description = "EC2 instances running keel serve (all on the same PostgreSQL store)."
  type        = list(string)
}

variable "instance_port" {
  description = "The port keel serve listens on."
  type        = number
  default     = 8080
}

variable "instance_security_group_id" {
  description = "Security group of the instances; the load balancer is allowed in on instance_port."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener."
  type        = string
}

variable "keel_sse_heartbeat_seconds" {
  description = "Keel's --sse-heartbeat; the ALB idle timeout is set to four times it (at least 60 s)."
  type        = number
  default     = 15

  validation {
    # The ALB's idle timeout is 1..4000 s.
    condition     = var.keel_sse_heartbeat_seconds >= 1 && var.keel_sse_heartbeat_seconds * 4 <= 4000
    error_message = "keel_sse_heartbeat_seconds must be between 1 and 1000."
  }
}

variable "keel_drain_seconds" {
  description = "Keel's --drain-delay + --drain-timeout (5 s + 30 s by default); the deregistration delay is 10 s more."
  type        = number
  default     = 35

  validation {
    # The target group's deregistration delay is 0..3600 s.
    condition     = var.keel_drain_seconds >= 0 && var.keel_drain_seconds + 10 <= 3600
    error_message = "keel_drain_seconds must be between 0 and 3590."
  }
}

variable "keel_idle_timeout_seconds" {
  description = "Keel's --idle-timeout (75 s by default); it must stay above the ALB's idle timeout (checked when planning)."
  type        = number
  default     = 75
}
