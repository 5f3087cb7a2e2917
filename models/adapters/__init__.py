"""Family adapters around native modules (clip, vit, hierarchical, cnn), hook points, capture and attention."""
