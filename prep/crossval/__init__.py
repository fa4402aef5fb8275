"""Cross-validation: K models trained on the folds of ``prep split --folds K``
(``prep train --fold all``), their out-of-fold predictions and score, and the training images
whose labels the held-out models find least plausible."""
