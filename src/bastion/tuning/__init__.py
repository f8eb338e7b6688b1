"""Fine-tuning: LoRA adapters of a base model, trained on workspace documents, served by llama.cpp."""
