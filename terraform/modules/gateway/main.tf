locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
}

data "aws_ami" "debian" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "state"
    values = ["available"]
  }
}

################################################################################
# IAM: SSM only
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

resource "aws_iam_role" "gateway" {
  name_prefix        = "${var.name}-gw-"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.gateway.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name_prefix = "${var.name}-gw-"
  role        = aws_iam_role.gateway.name

  tags = var.tags
}

################################################################################
# Instances
################################################################################

resource "aws_instance" "gateway" {
  count = var.instance_count

  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids      = var.security_group_ids
  key_name                    = var.key_name
  iam_instance_profile        = aws_iam_instance_profile.gateway.name
  associate_public_ip_address = false # a public gateway gets an Elastic IP instead
  ebs_optimized               = true
  monitoring                  = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gib
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  tags = merge(var.tags, {
    Name            = "${var.name}-gw-${count.index}"
    "llmfleet:role" = "gateway"
  })

  volume_tags = merge(var.tags, { Name = "${var.name}-gw-${count.index}" })

  lifecycle {
    ignore_changes = [ami] # a new Debian image must not replace a serving gateway
  }
}

resource "aws_eip" "gateway" {
  count = var.public_ip ? var.instance_count : 0

  domain   = "vpc"
  instance = aws_instance.gateway[count.index].id

  tags = merge(var.tags, { Name = "${var.name}-gw-${count.index}" })
}
