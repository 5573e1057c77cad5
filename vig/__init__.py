"""Vision GNN on MindSpore."""
