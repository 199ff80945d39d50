# Plan-mode unit tests with a mock AWS provider: no credentials, no API calls.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                 = "unit"
  subnet_ids           = ["subnet-a", "subnet-b"]
  security_group_ids   = ["sg-storage"]
  kms_key_arn          = "arn:aws:kms:us-east-1:123456789012:key/mock"
  data_repository_path = "s3://unit-models/models"
}

run "fsx_lustre_linked_to_the_model_store" {
  command = plan

  assert {
    condition     = length(aws_fsx_lustre_file_system.this) == 1 && length(aws_efs_file_system.this) == 0
    error_message = "storage_type fsx_lustre creates one Lustre file system and no EFS."
  }
  assert {
    condition     = aws_fsx_lustre_file_system.this[0].per_unit_storage_throughput == 500 && aws_fsx_lustre_file_system.this[0].storage_capacity == 4800
    error_message = "Throughput per TiB and capacity come from the variables."
  }
  assert {
    condition     = aws_fsx_lustre_file_system.this[0].kms_key_id == var.kms_key_arn && one(aws_fsx_lustre_file_system.this[0].subnet_ids) == "subnet-a"
    error_message = "Lustre is encrypted with the given key and lives in the first subnet."
  }
  assert {
    condition     = aws_fsx_data_repository_association.models[0].data_repository_path == "s3://unit-models/models" && aws_fsx_data_repository_association.models[0].file_system_path == "/models"
    error_message = "The model store is linked at /models."
  }
  assert {
    condition     = output.mount.type == "fsx_lustre" && output.mount.models_path == "/mnt/llmfleet-models/models" && output.mount.throughput_mbps == 2343
    error_message = "The mount output names the type, the models path under the mount point and the aggregate throughput (4800 GiB x 500 MB/s/TiB)."
  }
}

run "fsx_without_link" {
  command = plan

  variables {
    data_repository_path = null
  }

  assert {
    condition     = length(aws_fsx_data_repository_association.models) == 0 && output.mount.models_path == "/mnt/llmfleet-models"
    error_message = "Without a data repository the models live at the mount point itself."
  }
}

run "efs_provisioned" {
  command = plan

  variables {
    storage_type                     = "efs"
    data_repository_path             = null
    efs_throughput_mode              = "provisioned"
    efs_provisioned_throughput_mibps = 1024
  }

  assert {
    condition     = length(aws_fsx_lustre_file_system.this) == 0 && length(aws_efs_mount_target.this) == 2
    error_message = "EFS gets a mount target in every subnet and no Lustre."
  }
  assert {
    condition     = aws_efs_file_system.this[0].encrypted && aws_efs_file_system.this[0].provisioned_throughput_in_mibps == 1024
    error_message = "EFS is encrypted and provisioned at the given throughput."
  }
  assert {
    condition     = output.mount.type == "efs" && output.mount.mount_name == null && output.mount.throughput_mbps == 1024
    error_message = "The mount output describes EFS."
  }
}
