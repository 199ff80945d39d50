locals {
  # Generated from catalog/gpus.yml: never edit gpu_instance_types.json by hand.
  gpu_table = jsondecode(file("${path.module}/gpu_instance_types.json")).instance_types
  gpu       = local.gpu_table[var.instance_type]

  staging = var.stage_on_instance_store && local.gpu.instance_store_gib > 0

  model_store_arn = var.model_store_bucket != null ? "arn:${data.aws_partition.current.partition}:s3:::${var.model_store_bucket}" : null

  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.gpu[0].id

  # Tags the inventory handoff reads (llmfleet inventory from-terraform).
  node_tags = merge(var.tags, {
    "llmfleet:role"           = "llm_node"
    "llmfleet:pool"           = var.name
    "llmfleet:gpu"            = local.gpu.gpu
    "llmfleet:gpu_count"      = tostring(local.gpu.gpu_count)
    "llmfleet:gpu_memory_mib" = tostring(local.gpu.gpu_memory_mib)
  })
}

################################################################################
# Image
################################################################################

data "aws_ami" "gpu" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = var.ami_owners

  filter {
    name   = "name"
    values = [var.ami_name_filter]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
  filter {
    name   = "state"
    values = ["available"]
  }
}

################################################################################
# IAM: SSM for access without SSH, read-only access to the model store
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${var.name}-"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "model_store_read" {
  count = var.model_store_bucket != null ? 1 : 0

  statement {
    actions   = ["s3:ListBucket"]
    resources = [local.model_store_arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.model_store_arn}/*"]
  }
}

resource "aws_iam_role_policy" "model_store_read" {
  count = var.model_store_bucket != null ? 1 : 0

  name   = "model-store-read"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.model_store_read[0].json
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.node.name

  tags = var.tags
}

################################################################################
# Placement group
################################################################################

resource "aws_placement_group" "this" {
  count = var.placement_strategy != null ? 1 : 0

  name     = var.name
  strategy = var.placement_strategy

  tags = var.tags
}

################################################################################
# Launch template and nodes
################################################################################

resource "aws_launch_template" "this" {
  name_prefix            = "${var.name}-"
  description            = "llmfleet GPU node pool ${var.name} (${var.instance_type}: ${local.gpu.gpu_count} x ${local.gpu.gpu})"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  ebs_optimized          = true
  update_default_version = true

  user_data = base64encode(templatefile("${path.module}/templates/user_data.sh.tftpl", {
    stage_on_instance_store = local.staging
    staging_path            = var.staging_path
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  # IMDSv2 only; one hop, so containers on the node cannot borrow the node's role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/sda1"
    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size_gib
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  network_interfaces {
    device_index                = 0
    subnet_id                   = var.subnet_id
    security_groups             = var.security_group_ids
    interface_type              = var.efa_enabled ? "efa" : null
    associate_public_ip_address = false
    delete_on_termination       = true
  }

  dynamic "placement" {
    for_each = var.placement_strategy != null ? [1] : []
    content {
      group_name = aws_placement_group.this[0].name
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.node_tags
  }

  tags = var.tags
}

resource "aws_instance" "node" {
  # checkov does not follow launch_template references; these are set in aws_launch_template.this and
  # asserted by tests/plan.tftest.hcl ("hardened_launch_template"):
  # checkov:skip=CKV_AWS_8:Root volume encryption (KMS) is set in the launch template.
  # checkov:skip=CKV_AWS_126:Detailed monitoring is enabled in the launch template.
  # checkov:skip=CKV_AWS_135:ebs_optimized is set in the launch template.
  # checkov:skip=CKV2_AWS_41:The instance profile (SSM + model store read) is set in the launch template.
  count = var.node_count

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # Repeated from the launch template so that drift on the instance itself is visible in plans.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  tags = merge(local.node_tags, {
    Name = "${var.name}-${count.index}"
  })

  lifecycle {
    # A new AMI release must not replace a serving node; roll nodes on purpose (taint or replace).
    ignore_changes = [launch_template[0].version]
  }
}
