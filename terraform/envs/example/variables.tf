################################################################################
# Account and naming
################################################################################

variable "name" {
  description = "Environment name: prefixes every resource and names the Ansible inventory (inventories/NAME)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name))
    error_message = "name must be 2-16 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "aws_account_id" {
  description = "The AWS account this environment lives in. The provider refuses any other; the KMS key policy names it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "AWS region, e.g. us-east-1."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "azs" {
  description = "Availability zones (1 to 4). GPU pools and FSx for Lustre use the first, where the GPU capacity is."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.azs) >= 1 && length(var.azs) <= 4 && alltrue([for az in var.azs : startswith(az, var.region)])
    error_message = "azs must list 1 to 4 availability zones of var.region, e.g. [\"us-east-1a\", \"us-east-1b\"]."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (/16 or larger)."
  type        = string
  default     = "10.40.0.0/16"
  nullable    = false
}

################################################################################
# Access
################################################################################

variable "admin_cidrs" {
  description = "CIDRs allowed to SSH to every host (office, VPN or bastion). 0.0.0.0/0 is refused."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_cidrs must list at least one valid CIDR, and none may be /0."
  }
}

variable "gateway_public_https" {
  description = "Expose the gateway's HTTPS listener to the internet (an Elastic IP per gateway, 443 open to 0.0.0.0/0). false: reachable from admin_cidrs and gateway_client_cidrs only."
  type        = bool
  default     = false
  nullable    = false
}

variable "gateway_client_cidrs" {
  description = "Extra CIDRs that may call the gateway when it is not public."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "gateway_count" {
  description = "Number of HAProxy gateways."
  type        = number
  default     = 1
  nullable    = false
}

variable "ssh_key_name" {
  description = "EC2 key pair installed on every host for Ansible's SSH. null: none (SSM Session Manager only)."
  type        = string
  default     = null
}

################################################################################
# GPU node pools
################################################################################

variable "node_pools" {
  description = "GPU node pools by name. instance_type must be in catalog/gpus.yml (aws_instance_types); nodes is the node count, scaled by hand; efa adds an Elastic Fabric Adapter."
  type = map(object({
    instance_type           = string
    nodes                   = number
    efa                     = optional(bool, false)
    stage_on_instance_store = optional(bool, true)
    root_volume_size_gib    = optional(number, 200)
  }))
  nullable = false

  validation {
    condition     = length(var.node_pools) > 0 && alltrue([for k, _ in var.node_pools : can(regex("^[a-z][a-z0-9]{0,15}$", k))])
    error_message = "node_pools must hold at least one pool, each named with 1-16 lowercase letters and digits (e.g. \"h100\")."
  }
}

variable "gpu_ami_id" {
  description = "AMI for the GPU nodes. null: the newest AWS Deep Learning Base GPU AMI (Ubuntu 22.04)."
  type        = string
  default     = null
}

variable "gateway_ami_id" {
  description = "AMI for the gateways. null: the newest official Debian 12 AMI."
  type        = string
  default     = null
}

################################################################################
# Storage
################################################################################

variable "model_store_bucket_name" {
  description = "Name of the model store bucket. null: NAME-models-ACCOUNT_ID."
  type        = string
  default     = null
}

variable "storage_type" {
  description = "Shared file system for weights: \"fsx_lustre\" (linked to the model store, GB/s) or \"efs\"."
  type        = string
  default     = "fsx_lustre"
  nullable    = false
}

variable "fsx_storage_capacity_gib" {
  description = "FSx for Lustre capacity in GiB (1200 or a multiple of 2400)."
  type        = number
  default     = 4800
  nullable    = false
}

variable "fsx_throughput_per_tib" {
  description = "FSx for Lustre throughput in MB/s per TiB (PERSISTENT_2: 125, 250, 500 or 1000). 4800 GiB at 500 is about 2.3 GB/s."
  type        = number
  default     = 500
  nullable    = false
}
