"""Staff's CRM: notes, reminders and the customer timeline they and every change write to."""
