"""The networks: sequence encoders with their typed configs, and the stacked ensembles."""
