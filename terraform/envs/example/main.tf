locals {
  model_store_bucket = coalesce(var.model_store_bucket_name, "${var.name}-models-${var.aws_account_id}")
}

################################################################################
# Encryption key for volumes, the file system, the bucket and flow logs
################################################################################

resource "aws_kms_key" "fleet" {
  description             = "llmfleet ${var.name}: root volumes, shared storage, model store, flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  # A key policy, not an IAM policy: "Resource": "*" means this key. The account administers it through
  # IAM; CloudWatch Logs may use it only for this environment's log groups (the VPC flow logs).
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${var.aws_account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "FlowLogsEncrypt"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:aws:logs:${var.region}:${var.aws_account_id}:log-group:/llmfleet/${var.name}/*" }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "fleet" {
  name          = "alias/llmfleet-${var.name}"
  target_key_id = aws_kms_key.fleet.key_id
}

################################################################################
# Modules
################################################################################

module "network" {
  source = "../../modules/network"

  name                       = var.name
  vpc_cidr                   = var.vpc_cidr
  azs                        = var.azs
  admin_cidrs                = var.admin_cidrs
  gateway_public_https       = var.gateway_public_https
  gateway_client_cidrs       = var.gateway_client_cidrs
  node_intra_cluster_traffic = anytrue([for p in values(var.node_pools) : p.efa])
  kms_key_arn                = aws_kms_key.fleet.arn
}

module "model_store" {
  source = "../../modules/model_store"

  bucket_name = local.model_store_bucket
  kms_key_arn = aws_kms_key.fleet.arn
}

module "shared_storage" {
  source = "../../modules/shared_storage"

  name                     = var.name
  storage_type             = var.storage_type
  subnet_ids               = var.storage_type == "efs" ? module.network.private_subnet_ids : [module.network.private_subnet_ids[0]]
  security_group_ids       = [module.network.storage_security_group_id]
  kms_key_arn              = aws_kms_key.fleet.arn
  fsx_storage_capacity_gib = var.fsx_storage_capacity_gib
  fsx_throughput_per_tib   = var.fsx_throughput_per_tib
  data_repository_path     = var.storage_type == "fsx_lustre" ? module.model_store.s3_uri : null
}

module "gpu_node_pool" {
  source   = "../../modules/gpu_node_pool"
  for_each = var.node_pools

  name                    = "${var.name}-${each.key}"
  instance_type           = each.value.instance_type
  node_count              = each.value.nodes
  efa_enabled             = each.value.efa
  stage_on_instance_store = each.value.stage_on_instance_store
  root_volume_size_gib    = each.value.root_volume_size_gib
  subnet_id               = module.network.private_subnet_ids[0]
  security_group_ids      = [module.network.nodes_security_group_id]
  ami_id                  = var.gpu_ami_id
  key_name                = var.ssh_key_name
  kms_key_arn             = aws_kms_key.fleet.arn
  model_store_bucket      = local.model_store_bucket
}

module "gateway" {
  source = "../../modules/gateway"

  name               = var.name
  instance_count     = var.gateway_count
  subnet_ids         = var.gateway_public_https ? module.network.public_subnet_ids : module.network.private_subnet_ids
  security_group_ids = [module.network.gateway_security_group_id]
  public_ip          = var.gateway_public_https
  ami_id             = var.gateway_ami_id
  key_name           = var.ssh_key_name
  kms_key_arn        = aws_kms_key.fleet.arn
}
