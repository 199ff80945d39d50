locals {
  # One /20 private and one /24 public subnet per AZ: private 10.40.0.0/20, 10.40.16.0/20, ...;
  # public subnets start at the last /20 of a /16 (10.40.240.0/24, 10.40.241.0/24, ...).
  private_subnet_cidrs = [for i, _ in var.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnet_cidrs  = [for i, _ in var.azs : cidrsubnet(var.vpc_cidr, 8, 240 + i)]

  gateway_https_cidrs = distinct(concat(var.admin_cidrs, var.gateway_client_cidrs))
}

################################################################################
# VPC
################################################################################

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # FSx and EFS are mounted by DNS name

  tags = merge(var.tags, { Name = var.name })
}

# The default security group allows traffic between its members; nothing uses it, so it gets no rules.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-default-unused" })
}

resource "aws_subnet" "private" {
  count = length(var.azs)

  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.private_subnet_cidrs[count.index]
  availability_zone       = var.azs[count.index]
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-private-${var.azs[count.index]}", "llmfleet:tier" = "private" })
}

# Public subnets hold only the NAT gateway and the gateway's Elastic IP; nothing gets a public IP by default.
resource "aws_subnet" "public" {
  count = length(var.azs)

  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.public_subnet_cidrs[count.index]
  availability_zone       = var.azs[count.index]
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-public-${var.azs[count.index]}", "llmfleet:tier" = "public" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = length(var.azs)

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count = var.enable_nat_gateway ? 1 : 0

  domain = "vpc"

  tags = merge(var.tags, { Name = "${var.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  count = var.enable_nat_gateway ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id

  tags = merge(var.tags, { Name = var.name })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route" "private_nat" {
  count = var.enable_nat_gateway ? 1 : 0

  route_table_id         = aws_route_table.private.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_route_table_association" "private" {
  count = length(var.azs)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# S3 through a gateway endpoint: weights come from the model store without NAT charges.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}

data "aws_region" "current" {}

################################################################################
# Flow logs
################################################################################

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/llmfleet/${var.name}/vpc-flow-logs"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs_write" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name_prefix        = "${var.name}-flow-logs-"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs_write.json
}

resource "aws_flow_log" "this" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn

  tags = var.tags
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "gateway" {
  # checkov:skip=CKV2_AWS_5:Attached by the gateway module's instances, outside this module.
  name_prefix = "${var.name}-gateway-"
  description = "llmfleet gateway (HAProxy): HTTPS from clients, SSH from admins"
  vpc_id      = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-gateway" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "nodes" {
  # checkov:skip=CKV2_AWS_5:Attached by the gpu_node_pool module's launch template, outside this module.
  name_prefix = "${var.name}-nodes-"
  description = "llmfleet GPU nodes: vLLM from the gateway only, SSH from admins"
  vpc_id      = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-nodes" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "storage" {
  # checkov:skip=CKV2_AWS_5:Attached by the shared_storage module's file system, outside this module.
  name_prefix = "${var.name}-storage-"
  description = "llmfleet shared storage (FSx for Lustre or EFS): mounts from GPU nodes only"
  vpc_id      = aws_vpc.this.id

  tags = merge(var.tags, { Name = "${var.name}-storage" })

  lifecycle {
    create_before_destroy = true
  }
}

# Gateway ingress: the HTTPS listener from admins and named clients, or from anywhere when public.
resource "aws_vpc_security_group_ingress_rule" "gateway_https" {
  for_each = toset(var.gateway_public_https ? ["0.0.0.0/0"] : local.gateway_https_cidrs)

  security_group_id = aws_security_group.gateway.id
  description       = "HTTPS listener of the gateway"
  ip_protocol       = "tcp"
  from_port         = var.gateway_listener_port
  to_port           = var.gateway_listener_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "gateway_ssh" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.gateway.id
  description       = "SSH from the admin network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# Gateway egress: to vLLM on the nodes, and HTTP(S) out for packages (through NAT or the Elastic IP).
resource "aws_vpc_security_group_egress_rule" "gateway_to_vllm" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "vLLM instances on the GPU nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.vllm_port_range.from
  to_port                      = var.vllm_port_range.to
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "gateway_web" {
  for_each = toset(["80", "443"])

  security_group_id = aws_security_group.gateway.id
  description       = "Package mirrors (HTTP/HTTPS)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

# Node ingress: vLLM only from the gateway's security group; SSH only from admins.
resource "aws_vpc_security_group_ingress_rule" "nodes_vllm_from_gateway" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "vLLM instances, from the gateway only"
  ip_protocol                  = "tcp"
  from_port                    = var.vllm_port_range.from
  to_port                      = var.vllm_port_range.to
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_ssh" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.nodes.id
  description       = "SSH from the admin network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "nodes_intra_cluster" {
  count = var.node_intra_cluster_traffic ? 1 : 0

  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic between GPU nodes (EFA/NCCL)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_intra_cluster" {
  count = var.node_intra_cluster_traffic ? 1 : 0

  security_group_id            = aws_security_group.nodes.id
  description                  = "All traffic between GPU nodes (EFA/NCCL)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_web" {
  for_each = toset(["80", "443"])

  security_group_id = aws_security_group.nodes.id
  description       = "Package mirrors, container registries, the model source and S3 (HTTP/HTTPS)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_storage" {
  for_each = { lustre = [988, 988], lustre_ports = [1018, 1023], nfs = [2049, 2049] }

  security_group_id            = aws_security_group.nodes.id
  description                  = "Shared storage mounts (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value[0]
  to_port                      = each.value[1]
  referenced_security_group_id = aws_security_group.storage.id
}

# Storage ingress: Lustre (988, 1018-1023) and NFS (2049) from the nodes; Lustre servers also talk
# to each other on 988.
resource "aws_vpc_security_group_ingress_rule" "storage_from_nodes" {
  for_each = { lustre = [988, 988], lustre_ports = [1018, 1023], nfs = [2049, 2049] }

  security_group_id            = aws_security_group.storage.id
  description                  = "Shared storage mounts from the GPU nodes (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value[0]
  to_port                      = each.value[1]
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_ingress_rule" "storage_self" {
  for_each = { lustre = [988, 988], lustre_ports = [1018, 1023] }

  security_group_id            = aws_security_group.storage.id
  description                  = "FSx for Lustre servers among themselves (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value[0]
  to_port                      = each.value[1]
  referenced_security_group_id = aws_security_group.storage.id
}

resource "aws_vpc_security_group_egress_rule" "storage_self" {
  for_each = { lustre = [988, 988], lustre_ports = [1018, 1023] }

  security_group_id            = aws_security_group.storage.id
  description                  = "FSx for Lustre servers among themselves (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value[0]
  to_port                      = each.value[1]
  referenced_security_group_id = aws_security_group.storage.id
}
