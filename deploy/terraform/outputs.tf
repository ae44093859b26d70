output "eks_cluster_name" {
  description = "For `aws eks update-kubeconfig --name ...`."
  value       = aws_eks_cluster.main.name
}

output "app_role_arn" {
  description = "IAM role for the panthera service account (annotation eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.panthera.arn
}

output "settings_secret_arn" {
  description = "Secrets Manager secret holding the platform's secret settings."
  value       = aws_secretsmanager_secret.panthera.arn
}

output "stripe_secret_arn" {
  description = "Secrets Manager secret an operator fills with Stripe's keys."
  value       = aws_secretsmanager_secret.stripe.arn
}

output "postgres_address" {
  description = "RDS PostgreSQL endpoint (create the panthera_<service> databases there)."
  value       = aws_db_instance.postgres.address
}

output "media_bucket" {
  description = "PANTHERA_S3_BUCKET."
  value       = aws_s3_bucket.media.bucket
}

output "media_distribution_domain" {
  description = "CloudFront domain for PANTHERA_MEDIA_URL_PREFIX (or point var.media_domain at it)."
  value       = aws_cloudfront_distribution.media.domain_name
}

output "api_web_acl_arn" {
  description = "WAF web ACL for the API load balancer."
  value       = aws_wafv2_web_acl.api.arn
}
