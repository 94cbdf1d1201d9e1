output "ids" {
  description = "Workflow name => full id (projects/.../workflows/NAME)."
  value       = { for name, wf in google_workflows_workflow.this : name => wf.id }
}

output "service_account_member" {
  description = "IAM member of the workflows' identity (granted run.invoker on the functions it calls)."
  value       = "serviceAccount:${google_service_account.this.email}"
}
