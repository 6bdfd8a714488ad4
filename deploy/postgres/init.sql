-- One database per process, as in production: the orchestrator's and each service's own.
CREATE DATABASE sagaflow;
CREATE DATABASE orders;
CREATE DATABASE inventory;
CREATE DATABASE payment;
CREATE DATABASE shipping;
