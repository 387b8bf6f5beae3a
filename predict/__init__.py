"""diffseg3d.predict: using a trained model: `model_source` (a trial folder, an MLflow run or a
registered model -> a loaded model), `predictor` (NIfTI in, label map out), `evaluate_folder`
(predictions against reference labels). Runs after the experiments and from the command line."""
