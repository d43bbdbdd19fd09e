"""The job contract, torch-free: what a client may ask for and what the API validates before a
worker sees it (the job spec, each method's settings, the attack and method catalogues, dataset
references, evaluation and MLflow settings, threat models, cost bounds)."""
