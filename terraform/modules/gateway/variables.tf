variable "name" {
  description = "Name prefix; gateways are named NAME-gw-0, NAME-gw-1, ... in the inventory."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "instance_count" {
  description = "Number of HAProxy gateway instances (1 to 4); a DNS name or an NLB in front of several is up to you."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 4 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number from 1 to 4."
  }
}

variable "instance_type" {
  description = "Instance type of a gateway. HAProxy needs little: about 9 MB resident and under 1 ms per request."
  type        = string
  default     = "c7i.large"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type)) && !can(regex("^(g[0-9]|p[0-9]|inf|trn)", var.instance_type))
    error_message = "instance_type must be an EC2 type such as c7i.large, and not a GPU or accelerator type (g*, p*, inf*, trn*)."
  }
}

variable "subnet_ids" {
  description = "Subnets the gateways are spread over (round-robin): public subnets when public_ip is true, private ones otherwise."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the gateways (the network module's gateway_security_group_id)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must name at least one security group."
  }
}

variable "public_ip" {
  description = "Give each gateway an Elastic IP (clients on the internet). Pair with the network module's gateway_public_https."
  type        = bool
  default     = false
  nullable    = false
}

variable "listener_port" {
  description = "Port of the gateway's HTTPS listener (handed to Ansible as gateway_listen_port)."
  type        = number
  default     = 443
  nullable    = false

  validation {
    condition     = var.listener_port >= 1 && var.listener_port <= 65535
    error_message = "listener_port must be a TCP port, 1-65535."
  }
}

variable "ami_id" {
  description = "AMI to boot. null looks up the newest official Debian 12 (amd64) AMI."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null (look Debian 12 up) or an AMI ID such as ami-0123456789abcdef0."
  }
}

variable "ssh_user" {
  description = "Login user of the AMI (\"admin\" on Debian's AMIs); handed to Ansible as ansible_user."
  type        = string
  default     = "admin"
  nullable    = false
}

variable "key_name" {
  description = "EC2 key pair for SSH. null: no key pair."
  type        = string
  default     = null
}

variable "root_volume_size_gib" {
  description = "Size of the encrypted gp3 root volume."
  type        = number
  default     = 20
  nullable    = false

  validation {
    condition     = var.root_volume_size_gib >= 8 && var.root_volume_size_gib <= 1024
    error_message = "root_volume_size_gib must be from 8 to 1024."
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

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
