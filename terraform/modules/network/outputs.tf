output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnet IDs, in the order of var.azs. GPU nodes, storage and (private) gateways live here."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnet IDs, in the order of var.azs. Only the NAT gateway and a public gateway's Elastic IP use them."
  value       = aws_subnet.public[*].id
}

output "azs" {
  description = "Availability zones, in the order of the subnet lists."
  value       = var.azs
}

output "gateway_security_group_id" {
  description = "Security group of the gateway instances."
  value       = aws_security_group.gateway.id
}

output "nodes_security_group_id" {
  description = "Security group of the GPU nodes: vLLM ports open to the gateway's group only."
  value       = aws_security_group.nodes.id
}

output "storage_security_group_id" {
  description = "Security group of the shared file system's network interfaces."
  value       = aws_security_group.storage.id
}

output "vllm_port_range" {
  description = "The vLLM port range the node security group opens to the gateway."
  value       = var.vllm_port_range
}
