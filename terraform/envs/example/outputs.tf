output "fleet" {
  description = "Everything Ansible needs, in one object (schema_version 1): llm_nodes and gateways with private IPs and GPU facts, the shared storage mount, the model store and the vLLM port range. Read by `llmfleet inventory from-terraform --env NAME`."
  value = {
    schema_version  = 1
    env             = var.name
    region          = var.region
    llm_nodes       = flatten([for pool in sort(keys(module.gpu_node_pool)) : module.gpu_node_pool[pool].nodes])
    gateways        = module.gateway.gateways
    shared_storage  = module.shared_storage.mount
    vllm_port_range = module.network.vllm_port_range
    model_store = {
      bucket = module.model_store.bucket_name
      prefix = module.model_store.prefix
      s3_uri = module.model_store.s3_uri
    }
  }
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = module.network.vpc_id
}

output "kms_key_arn" {
  description = "ARN of the environment's KMS key."
  value       = aws_kms_key.fleet.arn
}

output "model_store_bucket" {
  description = "Name of the model store bucket."
  value       = module.model_store.bucket_name
}
