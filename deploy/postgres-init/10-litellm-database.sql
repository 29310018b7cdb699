-- Runs once, when the postgres volume is first initialised: LiteLLM gets its own database on the
-- same server. The credit worker's database (POSTGRES_DB, "credits") is created by the image
-- itself, and `litellm-credits migrate` would also create it if it were missing.
CREATE DATABASE litellm;
