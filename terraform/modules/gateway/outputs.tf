output "gateways" {
  description = "One object per gateway: name, id, private_ip, public_ip (null unless public_ip), availability_zone, ssh_user, listener_port. The inventory handoff reads this."
  value = [for i, g in aws_instance.gateway : {
    name              = g.tags["Name"]
    id                = g.id
    private_ip        = g.private_ip
    public_ip         = var.public_ip ? aws_eip.gateway[i].public_ip : null
    availability_zone = g.availability_zone
    ssh_user          = var.ssh_user
    listener_port     = var.listener_port
  }]
}

output "iam_role_name" {
  description = "Name of the gateways' IAM role."
  value       = aws_iam_role.gateway.name
}
