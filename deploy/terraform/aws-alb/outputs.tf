output "dns_name" {
  description = "Point your domain here; then check the path with: keel probe https://<domain>"
  value       = aws_lb.keel.dns_name
}

output "target_group_arn" {
  value = aws_lb_target_group.keel.arn
}
