# The example environment composed from the modules, planned with a mock AWS provider.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name           = "unit"
  aws_account_id = "123456789012"
  region         = "us-east-1"
  azs            = ["us-east-1a", "us-east-1b"]
  admin_cidrs    = ["192.0.2.0/24"]
  node_pools = {
    h100 = { instance_type = "p5.48xlarge", nodes = 2, efa = true }
    l4   = { instance_type = "g6.xlarge", nodes = 1 }
  }
}

run "composes_the_fleet" {
  command = plan

  assert {
    condition     = length(output.fleet.llm_nodes) == 3 && length(output.fleet.gateways) == 1
    error_message = "The fleet output lists every node of every pool and the gateway."
  }
  assert {
    condition     = [for n in output.fleet.llm_nodes : n.name] == ["unit-h100-0", "unit-h100-1", "unit-l4-0"]
    error_message = "Nodes are listed pool by pool, in name order."
  }
  assert {
    condition     = output.fleet.shared_storage.type == "fsx_lustre" && output.fleet.shared_storage.data_repository_path == "s3://unit-models-123456789012/models"
    error_message = "FSx for Lustre is linked to the model store by default."
  }
  assert {
    condition     = length(module.network.vllm_port_range) == 2 && output.fleet.vllm_port_range.from == 8100
    error_message = "The fleet output carries the vLLM port range the security groups open."
  }
}

run "efs_variant" {
  command = plan

  variables {
    storage_type = "efs"
  }

  assert {
    condition     = output.fleet.shared_storage.type == "efs" && output.fleet.shared_storage.data_repository_path == null
    error_message = "storage_type = efs swaps the file system and drops the S3 link."
  }
}
