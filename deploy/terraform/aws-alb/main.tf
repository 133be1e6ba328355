# An Application Load Balancer in front of Keel instances: round robin with
# stickiness off (Keel keeps no per-instance state: the failure of field report
# 000 cannot happen), an idle timeout above Keel's SSE heartbeat (the failure
# of report 002), health checks on /ready (503 as soon as an instance drains),
# and a deregistration delay that lets a draining instance finish its requests.
# Every instance must run `keel serve` against the same PostgreSQL store with
# the same KEEL_SECRET. After `terraform apply`: keel probe https://<domain>
#
# What the ALB does by itself and Keel relies on: it does not buffer responses
# (events arrive as sent), it accepts request bodies of any size (tus chunks),
# and it sets X-Forwarded-For and X-Forwarded-Proto. It speaks HTTP/2 to
# browsers, so many open event streams share one connection.
#
# On the instances, keel serve also needs --trusted-proxies (KEEL_TRUSTED_PROXIES)
# set to the CIDR blocks of public_subnet_ids, where the ALB's addresses come
# from (output trusted_proxies): Keel then takes the client's address from the
# X-Forwarded-For the ALB appends to, and per-client limits (60 new sessions a
# minute) count each client instead of all of them as the ALB. /metrics and
# /system-health answer only Keel's --ops-token once requests come through
# here; the health check uses /ready, which needs none.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Keel load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "HTTP, redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group_rule" "alb_to_instances" {
  type                     = "ingress"
  description              = "The load balancer reaches keel serve"
  from_port                = var.instance_port
  to_port                  = var.instance_port
  protocol                 = "tcp"
  security_group_id        = var.instance_security_group_id
  source_security_group_id = aws_security_group.alb.id
}

resource "aws_lb" "keel" {
  name               = var.name
  load_balancer_type = "application"
  security_groups    = [aws_security_group.alb.id]
  subnets            = var.public_subnet_ids

  # An event stream sends a heartbeat comment every keel_sse_heartbeat_seconds
  # when idle; the ALB closes connections idle for longer than this. Four
  # heartbeats of margin (60 s for the default 15 s). Keel closes a keep-alive
  # connection after its --idle-timeout (75 s by default) without a request,
  # so that must stay above this: the ALB then always closes an idle
  # connection first and never reuses one Keel just closed (a 502). The
  # precondition below refuses a plan where it would not.
  idle_timeout = max(60, var.keel_sse_heartbeat_seconds * 4)

  # Reject requests with malformed header names rather than passing them on.
  drop_invalid_header_fields = true

  lifecycle {
    precondition {
      condition     = var.keel_idle_timeout_seconds > max(60, var.keel_sse_heartbeat_seconds * 4)
      error_message = "keel_idle_timeout_seconds (Keel's --idle-timeout) must be above the ALB's idle timeout, max(60, 4 x keel_sse_heartbeat_seconds): raise --idle-timeout on the instances and here."
    }
  }
}

# The subnets the ALB's addresses come from, for Keel's --trusted-proxies.
data "aws_subnet" "public" {
  for_each = toset(var.public_subnet_ids)
  id       = each.value
}

resource "aws_lb_target_group" "keel" {
  name     = "${var.name}-http"
  port     = var.instance_port
  protocol = "HTTP"
  vpc_id   = var.vpc_id

  # Plain round robin, stated explicitly. (least_outstanding_requests would
  # count every open event stream as outstanding and starve the instances
  # that hold many of them of short requests, or flood those that hold few.)
  load_balancing_algorithm_type = "round_robin"

  # Every instance can serve every request: no stickiness. Written out (rather
  # than left to the default) so an override elsewhere cannot silently turn it
  # on, and so nobody "fixes" a 404 by turning it on: that was field report
  # 000, whose stickiness was silently dropped by an environment override.
  stickiness {
    enabled = false
    type    = "lb_cookie"
  }

  # On SIGTERM Keel answers /ready with 503 at once and keeps serving for
  # --drain-delay, then finishes in-flight requests for --drain-timeout.
  # Deregistration waits longer than that before cutting connections (45 s
  # with the defaults). Deregister an instance before stopping it (an Auto
  # Scaling group does); a stop without it is caught by the health check.
  deregistration_delay = var.keel_drain_seconds + 10

  # /ready is 200 when the store answers and the instance is not draining.
  # Two failures 5 s apart (ALB's shortest interval) take an instance out
  # within about 10-13 s. Keel keeps serving for its drain delay (5 s by
  # default) after SIGTERM; an instance that is restarted in place without
  # being deregistered first would then refuse requests the ALB still sends
  # it (502s). So either deregister before stopping (Auto Scaling, CodeDeploy
  # and ECS do), or set KEEL_DRAIN_DELAY=15s on the instances, with
  # keel_drain_seconds = 45 here and the service manager's stop timeout at
  # 50 s or more (see docs/deploying.md, "Draining").
  health_check {
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/ready"
    matcher             = "200"
    interval            = 5
    timeout             = 3
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "keel" {
  count            = length(var.instance_ids)
  target_group_arn = aws_lb_target_group.keel.arn
  target_id        = var.instance_ids[count.index]
  port             = var.instance_port
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.keel.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  # The ALB adds X-Forwarded-Proto: https, so Keel marks the session cookie Secure.
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.keel.arn
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.keel.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}
