# An Application Load Balancer in front of Keel instances: round robin with
# stickiness off (Keel keeps no per-instance state), an idle timeout above
# Keel's SSE heartbeat (the failure of seed report 002), health checks on
# /ready (503 as soon as an instance drains), and a deregistration delay that
# lets a draining instance finish its requests.

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
  # heartbeats of margin (60 s for the default 15 s).
  idle_timeout = max(60, var.keel_sse_heartbeat_seconds * 4)
}

resource "aws_lb_target_group" "keel" {
  name     = "${var.name}-http"
  port     = var.instance_port
  protocol = "HTTP"
  vpc_id   = var.vpc_id

  # Every instance can serve every request: no stickiness.
  stickiness {
    enabled = false
    type    = "lb_cookie"
  }

  # On SIGTERM Keel answers /ready with 503 at once and keeps serving for
  # --drain-delay, then finishes in-flight requests for --drain-timeout.
  # Deregistration waits longer than that before cutting connections.
  deregistration_delay = var.keel_drain_seconds + 10

  health_check {
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
