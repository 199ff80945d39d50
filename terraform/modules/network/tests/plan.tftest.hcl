# Plan-mode unit tests with a mock AWS provider: no credentials, no API calls.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name        = "unit"
  azs         = ["us-east-1a", "us-east-1b"]
  admin_cidrs = ["192.0.2.0/24"]
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "subnets_are_private_by_default" {
  command = plan

  assert {
    condition     = length(aws_subnet.private) == 2 && length(aws_subnet.public) == 2
    error_message = "One private and one public subnet per AZ."
  }
  assert {
    condition     = alltrue([for s in concat(aws_subnet.private, aws_subnet.public) : s.map_public_ip_on_launch == false])
    error_message = "No subnet may hand out public IPs on launch."
  }
  assert {
    condition     = aws_subnet.private[0].cidr_block == "10.40.0.0/20" && aws_subnet.public[1].cidr_block == "10.40.241.0/24"
    error_message = "Subnet CIDRs are carved deterministically from vpc_cidr."
  }
  assert {
    condition     = aws_flow_log.this.traffic_type == "ALL" && aws_cloudwatch_log_group.flow_logs.kms_key_id == var.kms_key_arn
    error_message = "VPC flow logs capture all traffic into a KMS-encrypted log group."
  }
}

run "vllm_only_from_gateway_ssh_only_from_admins" {
  command = plan

  assert {
    condition     = aws_vpc_security_group_ingress_rule.nodes_vllm_from_gateway.cidr_ipv4 == null
    error_message = "vLLM ports must not be opened to any CIDR, only to the gateway's security group."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.nodes_vllm_from_gateway.from_port == 8100 && aws_vpc_security_group_ingress_rule.nodes_vllm_from_gateway.to_port == 8199
    error_message = "vLLM ingress covers the planner's port range."
  }
  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.nodes_ssh) == ["192.0.2.0/24"] && keys(aws_vpc_security_group_ingress_rule.gateway_ssh) == ["192.0.2.0/24"]
    error_message = "SSH is open only to admin_cidrs."
  }
  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.gateway_https) == ["192.0.2.0/24"]
    error_message = "A private gateway's HTTPS listener is open to admin and client CIDRs only."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.nodes_intra_cluster) == 0
    error_message = "Node-to-node traffic is off unless asked for."
  }
}

run "public_https_is_the_only_world_ingress" {
  command = plan

  variables {
    gateway_public_https       = true
    gateway_client_cidrs       = ["198.51.100.0/24"]
    node_intra_cluster_traffic = true
  }

  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.gateway_https) == ["0.0.0.0/0"]
    error_message = "A public gateway opens exactly its HTTPS listener to 0.0.0.0/0."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.gateway_https["0.0.0.0/0"].from_port == 443
    error_message = "The public rule is the HTTPS listener port and nothing else."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.nodes_intra_cluster) == 1
    error_message = "node_intra_cluster_traffic adds one self-referencing rule for EFA."
  }
}

run "no_nat_when_disabled" {
  command = plan

  variables {
    enable_nat_gateway = false
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 0 && length(aws_route.private_nat) == 0
    error_message = "enable_nat_gateway = false creates no NAT gateway and no default route."
  }
}
