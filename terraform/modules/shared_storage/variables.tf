################################################################################
# Common
################################################################################

variable "name" {
  description = "Name prefix of the file system."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,40}$", var.name))
    error_message = "name must be 2-41 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "storage_type" {
  description = "Shared file system for the weights: \"fsx_lustre\" (GB/s, S3-backed, one AZ) or \"efs\" (elastic NFS, multi-AZ, slower)."
  type        = string
  default     = "fsx_lustre"
  nullable    = false

  validation {
    condition     = contains(["fsx_lustre", "efs"], var.storage_type)
    error_message = "storage_type must be \"fsx_lustre\" or \"efs\"."
  }
}

variable "subnet_ids" {
  description = "Private subnets. FSx for Lustre uses the first (put the GPU pools in the same AZ); EFS gets a mount target in each."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the file system (the network module's storage_security_group_id)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must name at least one security group."
  }
}

variable "kms_key_arn" {
  description = "KMS key (ARN) that encrypts the file system at rest."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "mount_point" {
  description = "Where Ansible mounts the file system on the nodes (handed over in the inventory)."
  type        = string
  default     = "/mnt/llmfleet-models"
  nullable    = false

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.mount_point)) && var.mount_point != "/"
    error_message = "mount_point must be an absolute path other than /, e.g. /mnt/llmfleet-models."
  }
}

################################################################################
# FSx for Lustre
################################################################################

variable "fsx_deployment_type" {
  description = "FSx for Lustre deployment type. PERSISTENT_2 is the only one with S3 data repository associations."
  type        = string
  default     = "PERSISTENT_2"
  nullable    = false

  validation {
    condition     = contains(["PERSISTENT_2", "PERSISTENT_1", "SCRATCH_2"], var.fsx_deployment_type)
    error_message = "fsx_deployment_type must be \"PERSISTENT_2\", \"PERSISTENT_1\" or \"SCRATCH_2\"."
  }
}

variable "fsx_storage_capacity_gib" {
  description = "FSx for Lustre capacity in GiB: 1200, or a multiple of 2400. Throughput scales with it."
  type        = number
  default     = 4800
  nullable    = false

  validation {
    condition     = var.fsx_storage_capacity_gib == 1200 || (var.fsx_storage_capacity_gib >= 2400 && var.fsx_storage_capacity_gib % 2400 == 0)
    error_message = "fsx_storage_capacity_gib must be 1200 or a multiple of 2400 (2400, 4800, 7200, ...)."
  }
}

variable "fsx_throughput_per_tib" {
  description = "FSx for Lustre throughput in MB/s per TiB of storage: 125, 250, 500 or 1000 for PERSISTENT_2; 50, 100 or 200 for PERSISTENT_1; ignored for SCRATCH_2. 4800 GiB at 500 gives about 2.3 GB/s."
  type        = number
  default     = 500
  nullable    = false

  validation {
    condition     = var.fsx_deployment_type == "SCRATCH_2" || contains(lookup({ PERSISTENT_2 = [125, 250, 500, 1000], PERSISTENT_1 = [50, 100, 200] }, var.fsx_deployment_type, []), var.fsx_throughput_per_tib)
    error_message = "fsx_throughput_per_tib must be 125, 250, 500 or 1000 for PERSISTENT_2, and 50, 100 or 200 for PERSISTENT_1."
  }
}

variable "data_repository_path" {
  description = "s3://BUCKET/PREFIX linked to the file system (the model store): objects appear as files, imported lazily. null: no link. Needs PERSISTENT_2."
  type        = string
  default     = null

  validation {
    condition     = var.data_repository_path == null || (can(regex("^s3://[a-z0-9][a-z0-9.-]+[a-z0-9](/.*)?$", coalesce(var.data_repository_path, "-"))) && var.fsx_deployment_type == "PERSISTENT_2")
    error_message = "data_repository_path must be null or s3://BUCKET[/PREFIX], and needs fsx_deployment_type = \"PERSISTENT_2\"."
  }
}

variable "data_repository_file_system_path" {
  description = "Directory of the file system where the S3 data repository appears, e.g. /models."
  type        = string
  default     = "/models"
  nullable    = false

  validation {
    condition     = can(regex("^/[A-Za-z0-9._-]+$", var.data_repository_file_system_path))
    error_message = "data_repository_file_system_path must be one absolute directory such as /models."
  }
}

################################################################################
# EFS
################################################################################

variable "efs_throughput_mode" {
  description = "EFS throughput mode: elastic (pay per use), provisioned (set efs_provisioned_throughput_mibps) or bursting."
  type        = string
  default     = "elastic"
  nullable    = false

  validation {
    condition     = contains(["elastic", "provisioned", "bursting"], var.efs_throughput_mode)
    error_message = "efs_throughput_mode must be \"elastic\", \"provisioned\" or \"bursting\"."
  }
}

variable "efs_provisioned_throughput_mibps" {
  description = "EFS throughput in MiB/s when efs_throughput_mode is provisioned (1 to 3414)."
  type        = number
  default     = null

  validation {
    condition     = var.efs_throughput_mode != "provisioned" || try(var.efs_provisioned_throughput_mibps >= 1 && var.efs_provisioned_throughput_mibps <= 3414, false)
    error_message = "efs_provisioned_throughput_mibps must be set (1 to 3414) when efs_throughput_mode is \"provisioned\"."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
