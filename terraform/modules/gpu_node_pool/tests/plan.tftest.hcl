# Plan-mode unit tests with a mock AWS provider: no credentials, no API calls.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "unit-h100"
  instance_type      = "p5.48xlarge"
  node_count         = 2
  subnet_id          = "subnet-mock"
  security_group_ids = ["sg-mock"]
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "gpu_facts_come_from_the_generated_table" {
  command = plan

  assert {
    condition     = output.gpu.gpu == "H100-80GB" && output.gpu.gpu_count == 8 && output.gpu.gpu_memory_mib == 81559
    error_message = "p5.48xlarge is 8 x H100-80GB (81559 MiB) in catalog/gpus.yml; the module must read the same facts."
  }
  assert {
    condition     = aws_instance.node[0].tags["llmfleet:gpu"] == "H100-80GB" && aws_instance.node[1].tags["llmfleet:gpu_count"] == "8"
    error_message = "Nodes carry the GPU tags the inventory reads."
  }
  assert {
    condition     = aws_instance.node[0].tags["Name"] == "unit-h100-0" && aws_instance.node[1].tags["Name"] == "unit-h100-1"
    error_message = "Nodes are named POOL-INDEX."
  }
  assert {
    condition     = length(output.nodes) == 2 && output.nodes[1].staging_path == "/mnt/llmfleet-staging"
    error_message = "The nodes output lists every node with its staging mount."
  }
}

run "hardened_launch_template" {
  command = plan

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required" && aws_instance.node[0].metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required on the launch template and the instances."
  }
  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "The metadata hop limit is 1: containers must not reach the node's credentials."
  }
  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true" && aws_launch_template.this.block_device_mappings[0].ebs[0].kms_key_id == var.kms_key_arn
    error_message = "The root volume is encrypted with the given KMS key."
  }
  assert {
    condition     = aws_launch_template.this.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "GPU nodes never get a public IP."
  }
  assert {
    condition     = aws_launch_template.this.network_interfaces[0].interface_type == null
    error_message = "No EFA unless asked for."
  }
  assert {
    condition     = aws_placement_group.this[0].strategy == "cluster" && aws_launch_template.this.placement[0].group_name == "unit-h100"
    error_message = "The pool sits in a cluster placement group by default."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.this.user_data), "mdadm --create")
    error_message = "With instance storage, first boot stripes the NVMe disks for staging."
  }
  assert {
    condition     = length(data.aws_ami.gpu) == 1 && aws_launch_template.this.image_id == "ami-0123456789abcdef0"
    error_message = "Without ami_id the GPU AMI is looked up."
  }
  assert {
    condition     = length(aws_iam_role_policy.model_store_read) == 0
    error_message = "No S3 access without a model store."
  }
}

run "efa_explicit_ami_no_placement" {
  command = plan

  variables {
    efa_enabled             = true
    ami_id                  = "ami-0fedcba9876543210"
    placement_strategy      = null
    stage_on_instance_store = false
    model_store_bucket      = "unit-models"
  }

  assert {
    condition     = aws_launch_template.this.network_interfaces[0].interface_type == "efa"
    error_message = "efa_enabled makes the primary interface an EFA."
  }
  assert {
    condition     = length(data.aws_ami.gpu) == 0 && aws_launch_template.this.image_id == "ami-0fedcba9876543210"
    error_message = "An explicit ami_id skips the lookup."
  }
  assert {
    condition     = length(aws_placement_group.this) == 0 && length(aws_launch_template.this.placement) == 0
    error_message = "placement_strategy = null creates no placement group."
  }
  assert {
    condition     = !strcontains(base64decode(aws_launch_template.this.user_data), "mdadm") && output.nodes[0].staging_path == null
    error_message = "Without staging the first boot script leaves the disks alone."
  }
  assert {
    condition     = length(aws_iam_role_policy.model_store_read) == 1
    error_message = "A model store bucket gives the nodes read access to it."
  }
}

run "zero_nodes" {
  command = plan

  variables {
    node_count = 0
  }

  assert {
    condition     = length(aws_instance.node) == 0 && length(output.nodes) == 0
    error_message = "A pool scaled to zero keeps its template and has no nodes."
  }
}
