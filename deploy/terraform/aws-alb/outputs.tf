output "dns_name" {
  description = "Point your domain here; then check the path with: keel probe https://<domain>"
  value       = aws_lb.keel.dns_name
}

output "target_group_arn" {
  value = aws_lb_target_group.keel.arn
}

output "alb_security_group_id" {
  description = "The load balancer's security group (already allowed in on instance_port of the instances' group)."
  value       = aws_security_group.alb.id
}

output "trusted_proxies" {
  description = "For keel serve --trusted-proxies (KEEL_TRUSTED_PROXIES) on the instances: the CIDR blocks the ALB's addresses come from."
  value       = join(",", [for subnet in data.aws_subnet.public : subnet.cidr_block])
}
