"""The Helm chart in helm/taskiq-flow, rendered and linted by the real helm binary."""
