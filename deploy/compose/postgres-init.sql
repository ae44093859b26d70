-- One database per service (PANTHERA_DATABASE_URL's {service}); a new service adds its line.
CREATE DATABASE panthera_auth;
CREATE DATABASE panthera_users;
CREATE DATABASE panthera_catalog;
CREATE DATABASE panthera_payments;
CREATE DATABASE panthera_orders;
CREATE DATABASE panthera_notifications;
CREATE DATABASE panthera_analytics;
