# The state: PostgreSQL (one database per service), Redis and RabbitMQ, each managed,
# spread over the availability zones, encrypted at rest and in transit, private.

# ---- PostgreSQL ------------------------------------------------------------------

resource "aws_db_subnet_group" "main" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "postgres" {
  name   = "${local.name}-postgres16"
  family = "postgres16"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

resource "random_password" "postgres" {
  length  = 40
  special = false
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "postgres" {
  identifier     = local.name
  engine         = "postgres"
  engine_version = "16.4"
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 10
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.main.arn

  db_name  = "panthera"
  username = "panthera"
  password = random_password.postgres.result

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.data["postgres"].id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.postgres.name

  # Point-in-time recovery over the retention window; see docs/runbooks/backup-and-restore.md.
  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.name}-final"

  auto_minor_version_upgrade            = true
  iam_database_authentication_enabled   = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.main.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
}

# ---- Redis -------------------------------------------------------------------------

resource "aws_elasticache_subnet_group" "main" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = local.name
  description          = "Panthera: rate limits, revoked tokens, response cache"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.redis_node_type
  port                 = 6379

  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.data["redis"].id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result

  snapshot_retention_limit   = 7
  snapshot_window            = "01:00-02:00"
  auto_minor_version_upgrade = true
}

# ---- RabbitMQ ----------------------------------------------------------------------

resource "random_password" "rabbitmq" {
  length  = 40
  special = false
}

resource "aws_mq_broker" "rabbitmq" {
  broker_name        = local.name
  engine_type        = "RabbitMQ"
  engine_version     = "3.13"
  host_instance_type = var.mq_instance_type
  # Three nodes over three zones: quorum queues survive the loss of one.
  deployment_mode     = "CLUSTER_MULTI_AZ"
  subnet_ids          = aws_subnet.private[*].id
  security_groups     = [aws_security_group.data["rabbitmq"].id]
  publicly_accessible = false

  auto_minor_version_upgrade = true

  encryption_options {
    use_aws_owned_key = false
    kms_key_id        = aws_kms_key.main.arn
  }

  logs {
    general = true
  }

  maintenance_window_start_time {
    day_of_week = "SUNDAY"
    time_of_day = "04:30"
    time_zone   = "UTC"
  }

  user {
    username = "panthera"
    password = random_password.rabbitmq.result
  }
}

# ---- The platform's secrets ---------------------------------------------------------

resource "random_password" "internal_token" {
  length  = 64
  special = false
}

# The settings that are secrets, as one JSON document; External Secrets turns it into
# the Kubernetes Secret `panthera-secrets` that deploy/k8s/overlays/prod expects.
resource "aws_secretsmanager_secret" "panthera" {
  #checkov:skip=CKV2_AWS_57:rotating these means restarting every service with the new value at once; done by the release runbook, not a rotation Lambda
  name       = "${local.name}/settings"
  kms_key_id = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "panthera" {
  secret_id = aws_secretsmanager_secret.panthera.id
  secret_string = jsonencode({
    PANTHERA_INTERNAL_TOKEN = random_password.internal_token.result
    PANTHERA_DATABASE_URL   = "postgresql+asyncpg://panthera:${random_password.postgres.result}@${aws_db_instance.postgres.address}:5432/panthera_{service}?ssl=require"
    PANTHERA_REDIS_URL      = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.redis.primary_endpoint_address}:6379/0"
    PANTHERA_AMQP_URL       = "amqps://panthera:${random_password.rabbitmq.result}@${replace(aws_mq_broker.rabbitmq.instances[0].endpoints[0], "amqps://", "")}/"
  })
}

# Stripe's keys come from Stripe, not from here: an operator puts them in this secret
# (PANTHERA_STRIPE_API_KEY, PANTHERA_STRIPE_WEBHOOK_SECRET) and External Secrets
# merges them into the same Kubernetes Secret.
resource "aws_secretsmanager_secret" "stripe" {
  #checkov:skip=CKV2_AWS_57:Stripe's keys are rolled in Stripe's dashboard, then stored here by an operator
  name       = "${local.name}/stripe"
  kms_key_id = aws_kms_key.main.arn
}
