variable "region" {
  description = "AWS region of the platform."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Name of the environment (prod, staging...); part of every resource name."
  type        = string
  default     = "prod"
}

variable "vpc_cidr" {
  description = "Address range of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "How many availability zones the subnets, nodes and data stores span."
  type        = number
  default     = 3
}

variable "eks_version" {
  description = "Kubernetes version of the EKS control plane."
  type        = string
  default     = "1.31"
}

variable "node_instance_types" {
  description = "Instance types of the EKS managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_count" {
  description = "Minimum, desired and maximum number of EKS worker nodes."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 3, desired = 3, max = 12 }
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.r6g.large"
}

variable "db_allocated_storage" {
  description = "RDS storage in GiB (it grows on its own up to ten times this)."
  type        = number
  default     = 100
}

variable "db_backup_retention_days" {
  description = "How long RDS keeps automated backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "redis_node_type" {
  description = "ElastiCache Redis node type."
  type        = string
  default     = "cache.r6g.large"
}

variable "mq_instance_type" {
  description = "Amazon MQ (RabbitMQ) broker instance type."
  type        = string
  default     = "mq.m5.large"
}

variable "shop_domain" {
  description = "The shop's public host name (the Ingress and CloudFront serve it)."
  type        = string
  default     = "shop.example.com"
}

variable "media_domain" {
  description = "Host name CloudFront serves product images from."
  type        = string
  default     = "media.shop.example.com"
}

variable "media_certificate_arn" {
  description = "ACM certificate (in us-east-1) for the media host name."
  type        = string

  validation {
    condition     = startswith(var.media_certificate_arn, "arn:aws:acm:us-east-1:")
    error_message = "CloudFront takes certificates from us-east-1 only."
  }
}
