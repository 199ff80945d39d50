################################################################################
# Pool
################################################################################

variable "name" {
  description = "Pool name, e.g. \"example-h100\". Hosts are named NAME-0, NAME-1, ... in the inventory."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,36}$", var.name))
    error_message = "name must be 2-37 characters (IAM name prefixes are limited to 38) of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "instance_type" {
  description = "AWS GPU instance type. Must be a key of gpu_instance_types.json, which is generated from catalog/gpus.yml (aws_instance_types)."
  type        = string
  nullable    = false

  validation {
    condition     = contains(keys(jsondecode(file("${path.module}/gpu_instance_types.json")).instance_types), var.instance_type)
    error_message = "instance_type ${jsonencode(var.instance_type)} is not in the GPU table generated from catalog/gpus.yml. Allowed: ${join(", ", sort(keys(jsondecode(file("${path.module}/gpu_instance_types.json")).instance_types)))}. To add a type, add it to catalog/gpus.yml and run `python -m llmfleet.devtools gpu-table --write`."
  }
}

variable "node_count" {
  description = "Number of GPU nodes in the pool (scaled by hand: change it and apply)."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.node_count >= 0 && var.node_count <= 64 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 0 to 64."
  }
}

variable "subnet_id" {
  description = "Private subnet for every node of the pool (one AZ, so a cluster placement group can hold them)."
  type        = string
  nullable    = false
}

variable "security_group_ids" {
  description = "Security groups of the nodes (the network module's nodes_security_group_id)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must name at least one security group."
  }
}

################################################################################
# Image and disks
################################################################################

variable "ami_id" {
  description = "AMI to boot. null looks up the newest AMI matching ami_name_filter from ami_owners (the AWS Deep Learning Base GPU AMI by default: NVIDIA driver preinstalled)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null (look the GPU AMI up) or an AMI ID such as ami-0123456789abcdef0."
  }
}

variable "ami_name_filter" {
  description = "Name pattern of the GPU AMI lookup, used when ami_id is null."
  type        = string
  default     = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
  nullable    = false
}

variable "ami_owners" {
  description = "Owners of the GPU AMI lookup, used when ami_id is null."
  type        = list(string)
  default     = ["amazon"]
  nullable    = false
}

variable "ssh_user" {
  description = "Login user of the AMI; handed to Ansible as ansible_user."
  type        = string
  default     = "ubuntu"
  nullable    = false
}

variable "key_name" {
  description = "EC2 key pair for SSH. null: no key pair (use SSM Session Manager, or keys placed by the image)."
  type        = string
  default     = null
}

variable "root_volume_size_gib" {
  description = "Size of the encrypted gp3 root volume (OS, container images, driver)."
  type        = number
  default     = 200
  nullable    = false

  validation {
    condition     = var.root_volume_size_gib >= 50 && var.root_volume_size_gib <= 16384
    error_message = "root_volume_size_gib must be from 50 to 16384."
  }
}

variable "kms_key_arn" {
  description = "KMS key (ARN) that encrypts the root volume."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "stage_on_instance_store" {
  description = "Stripe the instance-store NVMe disks into one RAID-0 at staging_path at boot, for weight staging. Ignored for types without instance storage (instance_store_gib = 0 in catalog/gpus.yml)."
  type        = bool
  default     = true
  nullable    = false
}

variable "staging_path" {
  description = "Mount point of the striped instance-store volume."
  type        = string
  default     = "/mnt/llmfleet-staging"
  nullable    = false

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.staging_path)) && var.staging_path != "/"
    error_message = "staging_path must be an absolute path other than /, e.g. /mnt/llmfleet-staging."
  }
}

################################################################################
# Placement and networking
################################################################################

variable "placement_strategy" {
  description = "Placement group strategy for the pool: cluster (low latency, one AZ), partition, spread, or null for none."
  type        = string
  default     = "cluster"

  validation {
    condition     = var.placement_strategy == null || contains(["cluster", "partition", "spread"], coalesce(var.placement_strategy, "none"))
    error_message = "placement_strategy must be \"cluster\", \"partition\", \"spread\" or null."
  }
}

variable "efa_enabled" {
  description = "Give each node an Elastic Fabric Adapter as its primary interface (multi-node NCCL). The type must support EFA; pair it with the network module's node_intra_cluster_traffic."
  type        = bool
  default     = false
  nullable    = false
}

variable "model_store_bucket" {
  description = "Name of the model store bucket; the nodes' role may read it. null: no S3 access. Pass a name known at plan time (not a resource attribute)."
  type        = string
  default     = null

  validation {
    condition     = var.model_store_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", coalesce(var.model_store_bucket, "-")))
    error_message = "model_store_bucket must be null or an S3 bucket name."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
