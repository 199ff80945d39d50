################################################################################
# VPC
################################################################################

variable "name" {
  description = "Name prefix for every resource, e.g. the environment name."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}$", var.name))
    error_message = "name must be 2-27 characters (IAM name prefixes are limited to 38) of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC. Private and public subnets are carved out of it (/20 and /24 per AZ)."
  type        = string
  default     = "10.40.0.0/16"
  nullable    = false

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) <= 16, false)
    error_message = "vpc_cidr must be a valid IPv4 CIDR of size /16 or larger, e.g. 10.40.0.0/16."
  }
}

variable "azs" {
  description = "Availability zones to spread subnets over (1 to 4). GPU pools with a cluster placement group use the first."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.azs) >= 1 && length(var.azs) <= 4 && length(distinct(var.azs)) == length(var.azs)
    error_message = "azs must list 1 to 4 distinct availability zones, e.g. [\"us-east-1a\", \"us-east-1b\"]."
  }
}

variable "enable_nat_gateway" {
  description = "Create one NAT gateway so private hosts can reach package mirrors and the model source. Without it private hosts have no way out."
  type        = bool
  default     = true
  nullable    = false
}

variable "flow_log_retention_days" {
  description = "Days to keep VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of CloudWatch's values: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "kms_key_arn" {
  description = "KMS key (ARN) that encrypts the flow-log group. Its key policy must allow the CloudWatch Logs service principal."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

################################################################################
# Access
################################################################################

variable "admin_cidrs" {
  description = "CIDRs allowed to SSH to the nodes and the gateway (an office, a VPN or a bastion). 0.0.0.0/0 is refused."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_cidrs must list at least one valid CIDR, and none may be /0 (SSH is never open to the world)."
  }
}

variable "vllm_port_range" {
  description = "TCP ports of the vLLM instances on the GPU nodes (the planner's base_port upwards). Reachable only from the gateway's security group."
  type = object({
    from = number
    to   = number
  })
  default  = { from = 8100, to = 8199 }
  nullable = false

  validation {
    condition     = var.vllm_port_range.from >= 1024 && var.vllm_port_range.to <= 65535 && var.vllm_port_range.from <= var.vllm_port_range.to
    error_message = "vllm_port_range must satisfy 1024 <= from <= to <= 65535."
  }
}

variable "gateway_listener_port" {
  description = "TCP port of the gateway's HTTPS listener (HAProxy terminates TLS)."
  type        = number
  default     = 443
  nullable    = false

  validation {
    condition     = var.gateway_listener_port >= 1 && var.gateway_listener_port <= 65535
    error_message = "gateway_listener_port must be a TCP port, 1-65535."
  }
}

variable "gateway_client_cidrs" {
  description = "CIDRs that may reach the gateway's HTTPS listener, besides admin_cidrs. 0.0.0.0/0 is refused here: set gateway_public_https instead."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for c in var.gateway_client_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "gateway_client_cidrs must be valid CIDRs and none may be /0; use gateway_public_https = true to open the listener to the internet."
  }
}

variable "gateway_public_https" {
  description = "Open the gateway's HTTPS listener (and only it) to 0.0.0.0/0. The only ingress from the internet this module ever creates."
  type        = bool
  default     = false
  nullable    = false
}

variable "node_intra_cluster_traffic" {
  description = "Allow all traffic between GPU nodes (needed for EFA/NCCL across nodes). Off by default."
  type        = bool
  default     = false
  nullable    = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
