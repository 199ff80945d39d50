# An example environment: two H100 nodes and one L40S node behind one private gateway, weights on
# FSx for Lustre linked to the model store. Only non-secret values belong here.
name           = "example"
aws_account_id = "123456789012"
region         = "us-east-1"
azs            = ["us-east-1a", "us-east-1b"]
admin_cidrs    = ["192.0.2.0/24"]

node_pools = {
  h100 = { instance_type = "p5.48xlarge", nodes = 2, efa = true }
  l40s = { instance_type = "g6e.12xlarge", nodes = 1 }
}

fsx_storage_capacity_gib = 4800
fsx_throughput_per_tib   = 500
